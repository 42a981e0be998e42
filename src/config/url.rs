//! Configuration from what an sqlx app already has: its `DATABASE_URL` (libpq's multi-host
//! form included), replica URLs beside it, or the `PgConnectOptions` and `PgPoolOptions` it
//! built its pool from.
//!
//! Each URL is read by sqlx itself (`PgConnectOptions::from_str`), so it means what it meant
//! to the app's `PgPool`: `sslmode`, `sslrootcert`, `options`, `application_name`,
//! `statement-cache-capacity`, `~/.pgpass` and the `PG*` defaults. rwsplit adds libpq's
//! multi-host authority (`postgres://h1:5432,h2:5433/db`): the first host is the primary as
//! configured, the others are replicas, and with `db.roles` at its default the primary is
//! whichever of them answers as one (which is what `target_session_attrs=read-write` asks of
//! libpq). Errors name the variable (or `url`) and show the URL with its password masked.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{Base, Config, ConfigError, ReplicaConfig};

/// The variable [`Config::from_env`] reads the primary's URL from.
const DATABASE_URL: &str = "DATABASE_URL";
/// The variable [`Config::from_env`] reads the replicas' URLs from (comma-separated).
const DATABASE_REPLICA_URLS: &str = "DATABASE_REPLICA_URLS";

impl Config {
    /// A configuration from one `postgres://` URL, as `PgPool::connect` takes it. With several
    /// hosts (`postgres://app:pw@h1:5432,h2:5433,h3:5434/shop`) the first is the primary and
    /// the rest are read replicas, named `host:port`, and read/write separation is on; with
    /// one host every query goes to it, as before. Every other setting is at its default;
    /// the setters change them.
    ///
    /// ```
    /// use rwsplit::Config;
    ///
    /// let config = Config::from_url("postgres://app:secret@10.0.0.1:5432,10.0.0.2:5432/shop")?;
    /// assert!(config.separation_enabled());
    /// assert_eq!(config.replicas()[0].name(), "10.0.0.2:5432");
    ///
    /// // A bad URL is named, and its password is not shown.
    /// let err = Config::from_url("postgres://app:secret@db:54x2/shop").unwrap_err();
    /// assert!(err.to_string().contains("url"));
    /// assert!(!err.to_string().contains("secret"));
    /// # Ok::<(), rwsplit::ConfigError>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Config, ConfigError> {
        from_urls("url", url, "replica url", &[])
    }

    /// A configuration from the primary's URL and each replica's (any of them may list
    /// several hosts; each host is a replica named `host:port`). Read/write separation is on
    /// when there is a replica. A replica's URL holds its own credentials and settings.
    ///
    /// ```
    /// use rwsplit::Config;
    ///
    /// let config = Config::from_urls(
    ///     "postgres://app:secret@primary.db:5432/shop",
    ///     ["postgres://app:secret@replica1.db:5432/shop", "postgres://app:secret@replica2.db/shop"],
    /// )?;
    /// assert_eq!(config.replicas().len(), 2);
    /// # Ok::<(), rwsplit::ConfigError>(())
    /// ```
    pub fn from_urls<I, S>(primary: &str, replicas: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let replicas: Vec<S> = replicas.into_iter().collect();
        let replicas: Vec<&str> = replicas.iter().map(AsRef::as_ref).collect();
        from_urls("url", primary, "replica url", &replicas)
    }

    /// A configuration from the environment an sqlx app already has: `DATABASE_URL` for the
    /// primary (as [`from_url`](Self::from_url) reads it), and `DATABASE_REPLICA_URLS`, when
    /// set and not empty, a comma-separated list of replica URLs (as
    /// [`from_urls`](Self::from_urls)).
    ///
    /// ```no_run
    /// // DATABASE_URL=postgres://app:secret@primary.db/shop
    /// // DATABASE_REPLICA_URLS=postgres://app:secret@replica1.db/shop,postgres://app:secret@replica2.db/shop
    /// let config = rwsplit::Config::from_env()?;
    /// # let _ = config;
    /// # Ok::<(), rwsplit::ConfigError>(())
    /// ```
    pub fn from_env() -> Result<Config, ConfigError> {
        from_env_with(|name| std::env::var(name).ok())
    }

    /// A configuration from the sqlx connection settings the app built its pool from: the
    /// primary's host, port, user, password, database, TLS settings and every other option
    /// they hold. Replicas are added with [`replica`](Self::replica) (see
    /// [`ReplicaConfig::from_connect_options`]); limits with
    /// [`pool_options`](Self::pool_options) or the setters. Not yet validated: finish with
    /// [`validate`](Self::validate), or hand it to [`Registry::connect`](crate::Registry::connect).
    ///
    /// ```
    /// use rwsplit::{Config, ReplicaConfig};
    /// use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    ///
    /// let primary = PgConnectOptions::new().host("primary.db").username("app").password("pw");
    /// let replica = primary.clone().host("replica1.db");
    /// let config = Config::from_connect_options(primary)
    ///     .pool_options(&PgPoolOptions::new().max_connections(20))
    ///     .read_write_separation(true)
    ///     .replica(ReplicaConfig::from_connect_options("replica1", replica))
    ///     .validate()?;
    /// assert_eq!(config.replicas().len(), 1);
    /// assert!(!format!("{config:?}").contains("pw"));
    /// # Ok::<(), rwsplit::ConfigError>(())
    /// ```
    pub fn from_connect_options(options: PgConnectOptions) -> Config {
        let mut config = Config::new(options.get_host());
        let primary = &mut config.primary;
        primary.port = options.get_port();
        primary.username = options.get_username().to_owned();
        primary.database = database_of(&options);
        primary.ssl_mode = options.get_ssl_mode();
        primary.base = Some(Base(options));
        config
    }

    /// Takes the pool limits of an sqlx `PgPoolOptions`: `max_connections`, `acquire_timeout`
    /// (as `connectTimeout`), `idle_timeout` and `max_lifetime`, for the primary and the
    /// replicas that set none of their own. rwsplit's pools open connections as they are
    /// needed, so `min_connections` is not taken.
    pub fn pool_options(mut self, options: &PgPoolOptions) -> Self {
        let pool = &mut self.primary.pool;
        pool.max_connections = options.get_max_connections();
        pool.connect_timeout = options.get_acquire_timeout();
        pool.idle_timeout = options.get_idle_timeout();
        pool.max_lifetime = options.get_max_lifetime();
        self
    }
}

impl ReplicaConfig {
    /// A replica called `name`, from sqlx connection settings: its address, credentials,
    /// database, TLS settings and every other option they hold, inheriting nothing of the
    /// primary's but the pool limits.
    pub fn from_connect_options(name: impl Into<String>, options: PgConnectOptions) -> Self {
        let mut replica = ReplicaConfig::new(name, options.get_host()).port(options.get_port());
        replica.username = Some(options.get_username().to_owned());
        replica.database = Some(database_of(&options));
        replica.ssl_mode = Some(options.get_ssl_mode());
        replica.base = Some(Base(options));
        replica
    }
}

/// The database a session gets: the one named, else the user's own (PostgreSQL's default).
fn database_of(options: &PgConnectOptions) -> String {
    options
        .get_database()
        .unwrap_or(options.get_username())
        .to_owned()
}

/// [`Config::from_env`] with the environment read through `var`.
fn from_env_with(var: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let primary = var(DATABASE_URL).filter(|url| !url.trim().is_empty());
    let Some(primary) = primary else {
        return Err(ConfigError::Missing {
            key: DATABASE_URL.to_owned(),
            reason: "set it to the primary's URL (postgres://user:password@host:port/database)"
                .to_owned(),
        });
    };
    let replicas = var(DATABASE_REPLICA_URLS).unwrap_or_default();
    let replicas: Vec<&str> = replicas
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect();
    from_urls(DATABASE_URL, &primary, DATABASE_REPLICA_URLS, &replicas)
}

/// The configuration of a primary URL and replica URLs; `key` and `replicas_key` name them
/// in errors.
fn from_urls(
    key: &str,
    primary: &str,
    replicas_key: &str,
    replicas: &[&str],
) -> Result<Config, ConfigError> {
    let mut hosts = split(key, primary.trim(), true)?.into_iter();
    let first = hosts.next().expect("a URL has at least one host");
    let mut config = Config::from_connect_options(first);
    let mut added = Vec::new();
    added.extend(hosts);
    for (i, url) in replicas.iter().enumerate() {
        added.extend(split(&format!("{replicas_key}[{i}]"), url.trim(), false)?);
    }
    let separation = !added.is_empty();
    for options in added {
        let name = format!("{}:{}", options.get_host(), options.get_port());
        config = config.replica(ReplicaConfig::from_connect_options(name, options));
    }
    config.read_write_separation(separation).validate()
}

/// The connection settings of each host of `url` (one, or libpq's `h1:p1,h2:p2` list), read
/// by sqlx. `primary`: the URL must be able to take writes (`target_session_attrs`).
fn split(key: &str, url: &str, primary: bool) -> Result<Vec<PgConnectOptions>, ConfigError> {
    let masked = mask(url);
    let invalid = |reason: String| ConfigError::Invalid {
        key: key.to_owned(),
        value: masked.clone(),
        reason,
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL at all: it may be anything, a password among them, so it is not shown.
        return Err(ConfigError::Invalid {
            key: key.to_owned(),
            value: "[not shown]".to_owned(),
            reason: "not a PostgreSQL URL: postgres://user:password@host:port/database".to_owned(),
        });
    };
    if scheme != "postgres" && scheme != "postgresql" {
        return Err(invalid(format!(
            "the scheme is `{scheme}`: a PostgreSQL URL starts with postgres:// or postgresql://"
        )));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let (tail, attrs) = without_session_attrs(tail);
    if let Some(attrs) = attrs {
        let writable = matches!(attrs.as_str(), "any" | "read-write" | "primary" | "");
        if primary && !writable {
            return Err(ConfigError::Invalid {
                key: format!("{key}?target_session_attrs"),
                value: attrs,
                reason: "the primary's URL must reach a server that takes writes: `read-write`, \
                         `primary` or `any` (replicas go in their own URLs)"
                    .to_owned(),
            });
        }
    }
    hosts
        .split(',')
        .map(|host| {
            let one = format!("{scheme}://{userinfo}{host}{tail}");
            PgConnectOptions::from_str(&one).map_err(|error| {
                // sqlx's messages name a part of the URL at most; none may be the password's.
                let reason = error.to_string();
                match shares_secret(&reason, url) {
                    true => invalid("the URL does not parse".to_owned()),
                    false => invalid(reason),
                }
            })
        })
        .collect()
}

/// `tail` (path and query) without `target_session_attrs`, and its value: rwsplit finds the
/// primary itself, and sqlx would ignore the parameter with a warning.
fn without_session_attrs(tail: &str) -> (String, Option<String>) {
    let Some((path, query)) = tail.split_once('?') else {
        return (tail.to_owned(), None);
    };
    let mut attrs = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some(("target_session_attrs", value)) => {
                attrs = Some(value.to_owned());
                false
            }
            _ => true,
        })
        .collect();
    match kept.is_empty() {
        true => (path.to_owned(), attrs),
        false => (format!("{path}?{}", kept.join("&")), attrs),
    }
}

/// `url` with its password (in the user part or a `password=` parameter) replaced by
/// `[redacted]`, for errors.
pub(crate) fn mask(url: &str) -> String {
    let mut masked = match (url.find("://"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            let user = &url[start + 3..at];
            match user.split_once(':') {
                Some((name, _)) => format!("{}{name}:[redacted]{}", &url[..start + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    };
    if let Some(query) = masked.find('?') {
        let (head, params) = masked.split_at(query + 1);
        let params: Vec<String> = params
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some(("password", _)) => "password=[redacted]".to_owned(),
                _ => pair.to_owned(),
            })
            .collect();
        masked = format!("{head}{}", params.join("&"));
    }
    masked
}

/// Whether `text` holds four or more characters in a row of a password in `url`.
fn shares_secret(text: &str, url: &str) -> bool {
    let mut secrets = Vec::new();
    if let (Some(start), Some(at)) = (url.find("://"), url.rfind('@'))
        && at > start
        && let Some((_, password)) = url[start + 3..at].split_once(':')
    {
        secrets.push(password);
    }
    if let Some((_, query)) = url.split_once('?') {
        secrets.extend(query.split('&').filter_map(|p| p.strip_prefix("password=")));
    }
    secrets.iter().any(|secret| {
        let chars: Vec<char> = secret.chars().collect();
        chars.len() >= 4
            && chars
                .windows(4)
                .any(|w| text.contains(&w.iter().collect::<String>()))
            || (!chars.is_empty() && chars.len() < 4 && text.contains(*secret))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn one_url_is_the_primary_alone() {
        let config =
            Config::from_url("postgres://app:pw@db.internal:6432/shop?sslmode=require").unwrap();
        assert!(!config.separation_enabled());
        assert!(config.replicas().is_empty());
        let options = config.primary_options();
        assert_eq!(options.get_host(), "db.internal");
        assert_eq!(options.get_port(), 6432);
        assert_eq!(options.get_username(), "app");
        assert_eq!(options.get_database(), Some("shop"));
        assert!(matches!(
            options.get_ssl_mode(),
            sqlx::postgres::PgSslMode::Require
        ));
        assert_eq!(options.get_application_name(), Some("rwsplit"));
    }

    #[test]
    fn a_multi_host_url_lists_the_primary_then_its_replicas() {
        let config = Config::from_url(
            "postgresql://app:p%40ss@h1:5432,h2:5433,[::1]:5434/shop?target_session_attrs=read-write&application_name=shop-api",
        )
        .unwrap();
        assert!(config.separation_enabled());
        let names: Vec<&str> = config.replicas().iter().map(|r| r.name()).collect();
        assert_eq!(names, ["h2:5433", "[::1]:5434"]);
        let replica = config.replica_options(&config.replicas()[0]);
        assert_eq!(replica.get_host(), "h2");
        assert_eq!(replica.get_port(), 5433);
        assert_eq!(replica.get_database(), Some("shop"));
        // The app's own name stays; target_session_attrs is rwsplit's to honour.
        assert_eq!(replica.get_application_name(), Some("shop-api"));
        assert_eq!(config.primary_options().get_host(), "h1");
    }

    #[test]
    fn the_environment_names_primary_and_replicas() {
        let config = from_env_with(env(&[
            ("DATABASE_URL", "postgres://app:pw@primary/shop"),
            (
                "DATABASE_REPLICA_URLS",
                " postgres://reader:rpw@r1:5433/shop , postgres://reader:rpw@r2/shop,",
            ),
        ]))
        .unwrap();
        assert!(config.separation_enabled());
        let names: Vec<&str> = config.replicas().iter().map(|r| r.name()).collect();
        assert_eq!(names, ["r1:5433", "r2:5432"]);
        let replica = config.replica_options(&config.replicas()[0]);
        assert_eq!(replica.get_username(), "reader");
        // Nothing of the primary's credentials in the replica's.
        assert!(!format!("{replica:?}").contains("\"pw\""));

        let alone = from_env_with(env(&[("DATABASE_URL", "postgres://app@primary/shop")])).unwrap();
        assert!(!alone.separation_enabled());
        let empty = from_env_with(env(&[
            ("DATABASE_URL", "postgres://app@primary/shop"),
            ("DATABASE_REPLICA_URLS", ""),
        ]))
        .unwrap();
        assert!(empty.replicas().is_empty());
    }

    #[test]
    fn a_missing_database_url_is_named() {
        let err = from_env_with(env(&[])).unwrap_err();
        assert!(matches!(&err, ConfigError::Missing { key, .. } if key == "DATABASE_URL"));
    }

    #[test]
    fn bad_urls_name_the_variable_and_never_the_password() {
        let cases = [
            ("mysql://app:hunter22@h/db", "scheme"),
            ("postgres://app:hunter22@h:54x2/db", "invalid port"),
            (
                "postgres://app:hunter22@h/db?sslmode=sometimes",
                "sometimes",
            ),
            ("not a url hunter22", "PostgreSQL URL"),
            (
                "postgres://app:hunter22@h/db?password=hunter22&sslmode=x",
                "x",
            ),
        ];
        for (url, says) in cases {
            let err = from_env_with(env(&[("DATABASE_URL", url)])).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("DATABASE_URL"), "{text}");
            assert!(text.contains(says), "{url}: {text}");
            for part in ["hunter22", "hunt", "er22"] {
                assert!(!text.contains(part), "{url}: {text}");
                assert!(!format!("{err:?}").contains(part), "{url}: {err:?}");
            }
        }
        let err = from_env_with(env(&[
            ("DATABASE_URL", "postgres://app@p/db"),
            ("DATABASE_REPLICA_URLS", "postgres://app:s3cr3t@r:0x/db"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("DATABASE_REPLICA_URLS"), "{err}");
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }

    #[test]
    fn the_primary_url_must_take_writes() {
        let err =
            Config::from_url("postgres://app@h1,h2/db?target_session_attrs=standby").unwrap_err();
        assert!(
            err.to_string().contains("url?target_session_attrs"),
            "{err}"
        );
        assert!(err.to_string().contains("standby"), "{err}");
        // A replica's URL may say so.
        Config::from_urls(
            "postgres://app@p/db",
            ["postgres://app@r/db?target_session_attrs=standby"],
        )
        .unwrap();
    }

    #[test]
    fn masking_hides_the_user_password_and_the_parameter() {
        assert_eq!(
            mask("postgres://app:p@ss@h/db?password=x&sslmode=require"),
            "postgres://app:[redacted]@h/db?password=[redacted]&sslmode=require"
        );
        assert_eq!(mask("postgres://app@h/db"), "postgres://app@h/db");
    }

    #[test]
    fn pool_options_set_the_limits() {
        let pool = PgPoolOptions::new()
            .max_connections(42)
            .acquire_timeout(Duration::from_secs(3))
            .idle_timeout(None)
            .max_lifetime(Duration::from_secs(600));
        let config = Config::new("h").pool_options(&pool);
        assert_eq!(config.primary.pool.max_connections, 42);
        assert_eq!(config.primary.pool.connect_timeout, Duration::from_secs(3));
        assert_eq!(config.primary.pool.idle_timeout, None);
        assert_eq!(
            config.primary.pool.max_lifetime,
            Some(Duration::from_secs(600))
        );
    }

    #[test]
    fn connect_options_keep_what_the_fields_do_not_name() {
        let options = PgConnectOptions::new_without_pgpass()
            .host("h")
            .port(6000)
            .username("u")
            .password("the-password")
            .statement_cache_capacity(7)
            .options([("search_path", "shop")]);
        let config = Config::from_connect_options(options);
        let made = config.primary_options();
        assert_eq!(made.get_port(), 6000);
        assert_eq!(made.get_database(), Some("u"));
        assert_eq!(made.get_options(), Some("-c search_path=shop"));
        assert!(!format!("{config:?}").contains("the-password"));
        // The password is still there to connect with.
        assert!(format!("{made:?}").contains("the-password"));
    }
}
