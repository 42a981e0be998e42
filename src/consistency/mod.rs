//! Read-your-writes: the signed causal token that keeps a client that just wrote off replicas
//! that have not replayed its write yet.
//!
//! After a request that wrote, [`RwSplitLayer`](crate::RwSplitLayer) asks the primary for its
//! WAL insert position and returns it to the client, signed, as a cookie and a response header.
//! On the client's next reads the layer verifies the token, and the registry sends the read to a
//! replica only if that replica has replayed at least that position (a memory lookup against
//! positions the registry polls in the background); otherwise to the primary. As soon as a
//! replica has caught up, reads go back to replicas. A token is honoured for at most
//! `maxPin` after it was issued.
//!
//! A token that is malformed, oversized, signed with another key, expired, issued in the
//! future, or names a position the primary had not reached when it was issued is ignored (the
//! read routes as if no token were sent) and counted in `rwsplit_consistency_tokens_rejected_total`.
//!
//! Code outside HTTP carries the unsigned [`ConsistencyToken`], which is serializable: a job
//! enqueued after a write reads from a replica that has seen the write.
//!
//! ```
//! use rwsplit::{Config, ConsistencyConfig, ConsistencyToken, Registry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Registry::connect_lazy(
//!     Config::new("127.0.0.1")
//!         .consistency(ConsistencyConfig::lsn().signing_key("a key of at least 32 bytes, from ${ENV}")),
//! )?;
//! // After a write in a job: `let token = registry.consistency_token().await?;`
//! let token = ConsistencyToken::new(0x16_B374_D848);
//! // ...carried in the job's payload (serde), then, in the worker:
//! let json = serde_json::to_string(&token)?;
//! let token: ConsistencyToken = serde_json::from_str(&json)?;
//! let db = registry.read_after(&token); // a replica that has replayed it, or the primary
//! # let _ = db;
//!
//! // What clients receive: the same token, signed.
//! let signed = registry.sign_token(&token);
//! assert_eq!(registry.verify_token(&signed), Ok(token));
//! assert!(registry.verify_token("forged").is_err());
//! # Ok(())
//! # }
//! ```

mod rounds;
mod sticky;
mod token;

pub(crate) use rounds::Rounds;
pub(crate) use sticky::Sticky;
pub use token::{ConsistencyToken, TokenRejection};
