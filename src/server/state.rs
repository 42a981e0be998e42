//! Where a server stands: in service, or out of it and why.

/// Where a server stands. `Serving` and `Suspect` are in service; the others are out of it,
/// each for its own reason, and re-probed on a short backoff until they pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum State {
    /// In service.
    Serving = 0,
    /// In service, but a session on it was lost: a probe on a fresh connection decides.
    Suspect = 1,
    /// Out: it gives no connections, or its checks get no answer.
    Unreachable = 2,
    /// Out: a replica lagging past a threshold.
    Lagging = 3,
    /// Out: a primary in recovery, or a replica that is not a standby.
    WrongRole = 4,
    /// Out: a replica of another cluster (system identifier) or on another timeline than the
    /// primary: its data has forked from the primary's, whatever its position says.
    Diverged = 5,
}

impl State {
    pub(crate) fn from_u8(value: u8) -> State {
        match value {
            0 => State::Serving,
            1 => State::Suspect,
            2 => State::Unreachable,
            3 => State::Lagging,
            4 => State::WrongRole,
            _ => State::Diverged,
        }
    }

    /// Whether work may be sent to a server in this state.
    pub(crate) fn in_service(self) -> bool {
        matches!(self, State::Serving | State::Suspect)
    }

    /// Whether work that only this server can do waits for one of its connections, as it would
    /// on a plain pool: in service, or out only for being unreachable (it may be restarting).
    /// A server out for its role or its timeline refuses such work at once.
    pub(crate) fn awaited(self) -> bool {
        self.in_service() || self == State::Unreachable
    }

    /// The state as a lowercase label, for logs, metrics and the status endpoint.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Serving => "serving",
            State::Suspect => "suspect",
            State::Unreachable => "unreachable",
            State::Lagging => "lagging",
            State::WrongRole => "wrong_role",
            State::Diverged => "diverged",
        }
    }
}
