//! Whether a server refuses connections right now, found without PostgreSQL: a TCP (or Unix
//! socket) connect that is refused at once.
//!
//! sqlx's pool retries a refused connection until its acquire timeout, as the server may be
//! starting up, so work waiting on a stopped server learns nothing for `connectTimeout`. When a
//! wait for a new connection runs long, one such connect tells a stopped server (refused at
//! once) from a slow one (accepted, or no answer yet): the stopped one leaves service and the
//! work waiting on it moves on. The connect sends nothing and is closed at once; PostgreSQL
//! starts no session for it and logs nothing.

use std::io;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

/// The connect error when the server at `options` refuses connections now; `None` when it
/// accepts them, or gives no answer within `within` (it may be slow, not gone).
pub(crate) async fn refused(options: &PgConnectOptions, within: Duration) -> Option<io::Error> {
    let connect = async {
        #[cfg(unix)]
        if let Some(path) = socket_path(options) {
            return tokio::net::UnixStream::connect(path).await.map(drop);
        }
        tokio::net::TcpStream::connect((options.get_host(), options.get_port()))
            .await
            .map(drop)
    };
    match tokio::time::timeout(within, connect).await {
        Ok(Err(error)) if is_refusal(&error) => Some(error),
        _ => None,
    }
}

/// Whether a connect error says nothing listens there (rather than a slow or unknown answer).
fn is_refusal(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::NotFound
            | io::ErrorKind::AddrNotAvailable
    )
}

/// The Unix socket sqlx connects to for `options`, as libpq names it: `<dir>/.s.PGSQL.<port>`.
#[cfg(unix)]
fn socket_path(options: &PgConnectOptions) -> Option<std::path::PathBuf> {
    let dir = match options.get_socket() {
        Some(dir) => dir.clone(),
        None if options.get_host().starts_with('/') => options.get_host().into(),
        None => return None,
    };
    Some(dir.join(format!(".s.PGSQL.{}", options.get_port())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_refuses_and_a_listening_one_does_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        let options = PgConnectOptions::new_without_pgpass().host("127.0.0.1");
        let within = Duration::from_secs(1);
        assert!(refused(&options.clone().port(open), within).await.is_none());
        drop(listener);
        let error = refused(&options.port(open), within).await;
        assert_eq!(
            error.map(|e| e.kind()),
            Some(io::ErrorKind::ConnectionRefused)
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_missing_socket_refuses() {
        let dir = std::env::temp_dir().join(format!("rwsplit-reach-{}", std::process::id()));
        let options = PgConnectOptions::new_without_pgpass()
            .socket(&dir)
            .port(5999);
        assert_eq!(socket_path(&options), Some(dir.join(".s.PGSQL.5999")));
        assert!(refused(&options, Duration::from_secs(1)).await.is_some());
    }
}
