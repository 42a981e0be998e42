//! [`Registry::watch_file`]: the configuration file reloaded when it changes, and on SIGHUP.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Registry, Shared};
use crate::config::Config;

/// How often the file is read for changes.
const EVERY: Duration = Duration::from_millis(500);

impl Registry {
    /// Reloads the configuration from `path` (as [`Config::from_file`] reads it) whenever the
    /// file changes from what it holds when this is called, and on `SIGHUP` on Unix, through
    /// [`reload`](Self::reload).
    ///
    /// The file is read every 500 ms; a change is applied once two reads in a row agree, so
    /// an editor's half-written save is never applied. A file that cannot be read or is
    /// invalid is logged with its error (naming the key and value) and nothing changes; the
    /// next good version is applied. The task ends when the registry is shut down or
    /// dropped: it never keeps it alive.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # async fn run() -> Result<(), rwsplit::Error> {
    /// let registry = rwsplit::Registry::connect(rwsplit::Config::from_file("config.yaml")?).await?;
    /// registry.watch_file("config.yaml");
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch_file(&self, path: impl Into<PathBuf>) -> tokio::task::JoinHandle<()> {
        let path = path.into();
        let weak = Arc::downgrade(&self.shared);
        let mut stop = self.shared.stopped();
        // The file as it is now: what the registry runs (changes from here on are applied).
        let mut applied = std::fs::read_to_string(&path).ok();
        // Listening before this returns: a SIGHUP sent just after is not lost.
        let mut hangup = hangups();
        tokio::spawn(async move {
            let mut last_read = applied.clone();
            let mut ticker = tokio::time::interval(EVERY);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let forced = tokio::select! {
                    _ = ticker.tick() => false,
                    _ = next_hangup(&mut hangup) => true,
                    _ = stop.changed() => break,
                };
                let read = match std::fs::read_to_string(&path) {
                    Ok(text) => Some(text),
                    Err(error) => {
                        if forced || last_read.is_some() {
                            tracing::error!(
                                path = %path.display(),
                                %error,
                                "configuration file unreadable; the running configuration stays"
                            );
                        }
                        last_read = None;
                        continue;
                    }
                };
                let settled = read == last_read;
                last_read = read.clone();
                if !(forced || settled && read != applied) {
                    continue;
                }
                let Some(registry) = upgrade(&weak) else {
                    break;
                };
                applied = read;
                let text = applied.as_deref().unwrap_or_default();
                let outcome = match Config::from_yaml(text) {
                    Ok(config) => registry.reload(config).await.map(|changes| changes.len()),
                    Err(error) => Err(error.into()),
                };
                match outcome {
                    Ok(changes) => tracing::info!(
                        path = %path.display(),
                        changes,
                        "configuration file applied"
                    ),
                    Err(error) => tracing::error!(
                        path = %path.display(),
                        %error,
                        "configuration file refused; the running configuration stays"
                    ),
                }
            }
            tracing::debug!("rwsplit configuration watch stopped");
        })
    }
}

fn upgrade(weak: &Weak<Shared>) -> Option<Registry> {
    weak.upgrade().map(|shared| Registry { shared })
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

#[cfg(unix)]
fn hangups() -> Hangups {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangups() -> Hangups {}

/// The next SIGHUP; never, where there are none.
async fn next_hangup(hangups: &mut Hangups) {
    #[cfg(unix)]
    if let Some(signal) = hangups {
        signal.recv().await;
        return;
    }
    let _ = hangups;
    std::future::pending::<()>().await
}
