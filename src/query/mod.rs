//! A query's life on a chosen server: the [`Db`](crate::Db) handle (`handle.rs`), the
//! [`Target`] it holds (the server, the registry and the intent), the attempts of one piece of
//! work and where a failed one goes next (`attempt.rs`, the one owner of failover), and the
//! sqlx `Executor` that runs queries on a handle (`executor.rs`).

mod attempt;
mod executor;
mod handle;
mod target;

pub use handle::{Access, Db, DbConnection, DbRead, DbWrite, ReadOnly, ReadWrite};
pub(crate) use target::Target;
