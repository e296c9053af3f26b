//! [`Target`]: which Redis deployment a URL names, a single server, a Redis Cluster or a
//! master watched by Sentinel.
//!
//! - `redis://[USER:PASSWORD@]HOST[:PORT][/DB]` (`rediss://` for TLS): one server (or a
//!   managed endpoint that fails over behind one address).
//! - `redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…]` (`rediss+cluster://` for
//!   TLS): a Redis Cluster (Redis 7 or newer, for sharded pub/sub). The addresses are seeds:
//!   one reachable node is enough, the rest of the topology is read from the cluster.
//! - `redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…]/MASTER[/DB]`
//!   (`rediss+sentinel://` for TLS to the data nodes and sentinels): the master that the
//!   sentinels at these addresses call `MASTER`, looked up again after every broken
//!   connection, so the node follows a failover. The credentials are the data nodes'; the
//!   sentinels are asked without.

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// One server: the URL as given.
    Single(String),
    /// A cluster: one `redis://…` URL per seed node.
    Cluster(Vec<String>),
    /// A master found through sentinels.
    Sentinel {
        /// One `redis://HOST:PORT` (or `rediss://`) URL per sentinel.
        sentinels: Vec<String>,
        /// The master's name in the sentinels' configuration.
        master: String,
        /// The data nodes' credentials and database.
        tls: bool,
        username: Option<String>,
        password: Option<String>,
        db: i64,
    },
}

impl Target {
    /// Parses a broker URL; the error says what is wrong (without the password).
    pub(crate) fn parse(url: &str) -> Result<Target, String> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(USAGE.to_owned());
        };
        let (tls, kind) = match scheme {
            "redis" | "rediss" => return Ok(Target::Single(url.to_owned())),
            "redis+cluster" => (false, Kind::Cluster),
            "rediss+cluster" => (true, Kind::Cluster),
            "redis+sentinel" => (false, Kind::Sentinel),
            "rediss+sentinel" => (true, Kind::Sentinel),
            _ => return Err(USAGE.to_owned()),
        };
        let base = if tls { "rediss" } else { "redis" };
        let (authority, path) = match rest.find('/') {
            Some(index) => (&rest[..index], &rest[index + 1..]),
            None => (rest, ""),
        };
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let hosts: Vec<&str> = hosts.split(',').map(str::trim).collect();
        if hosts.iter().any(|host| host.is_empty()) {
            return Err("a host list with an empty entry".to_owned());
        }
        for host in &hosts {
            let port = host.rsplit_once(':').map(|(_, port)| port);
            if port.is_some_and(|port| port.parse::<u16>().is_err()) {
                return Err(format!("{host:?} is not HOST:PORT"));
            }
        }
        match kind {
            Kind::Cluster => {
                if !path.is_empty() {
                    return Err("a Redis Cluster has no databases: drop the /PATH".to_owned());
                }
                let prefix = userinfo.map_or_else(String::new, |user| format!("{user}@"));
                Ok(Target::Cluster(
                    hosts
                        .iter()
                        .map(|host| format!("{base}://{prefix}{host}"))
                        .collect(),
                ))
            }
            Kind::Sentinel => {
                let (master, db) = match path.split_once('/') {
                    Some((master, db)) => (master, db),
                    None => (path, ""),
                };
                if master.is_empty() {
                    return Err("name the master: redis+sentinel://HOST:PORT/MASTER".to_owned());
                }
                let db = if db.is_empty() {
                    0
                } else {
                    db.parse()
                        .map_err(|_| format!("{db:?} is not a database number"))?
                };
                let (username, password) = match userinfo {
                    None => (None, None),
                    Some(userinfo) => match userinfo.split_once(':') {
                        Some((user, password)) => (
                            Some(user.to_owned()).filter(|user| !user.is_empty()),
                            Some(password.to_owned()),
                        ),
                        None => (Some(userinfo.to_owned()), None),
                    },
                };
                Ok(Target::Sentinel {
                    sentinels: hosts
                        .iter()
                        .map(|host| format!("{base}://{host}"))
                        .collect(),
                    master: master.to_owned(),
                    tls,
                    username,
                    password,
                    db,
                })
            }
        }
    }
}

enum Kind {
    Cluster,
    Sentinel,
}

const USAGE: &str = "use redis://HOST:PORT, rediss://HOST:PORT, \
     redis+cluster://HOST:PORT,HOST:PORT… or redis+sentinel://HOST:PORT,HOST:PORT…/MASTER";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_single_server_a_cluster_or_sentinels() {
        assert_eq!(
            Target::parse("redis://h:1/2"),
            Ok(Target::Single("redis://h:1/2".to_owned()))
        );
        assert_eq!(
            Target::parse("redis+cluster://:pw@a:1,b:2"),
            Ok(Target::Cluster(vec![
                "redis://:pw@a:1".to_owned(),
                "redis://:pw@b:2".to_owned()
            ]))
        );
        assert_eq!(
            Target::parse("rediss+cluster://a:1"),
            Ok(Target::Cluster(vec!["rediss://a:1".to_owned()]))
        );
        assert_eq!(
            Target::parse("redis+sentinel://u:pw@a:1,b:2/main/3"),
            Ok(Target::Sentinel {
                sentinels: vec!["redis://a:1".to_owned(), "redis://b:2".to_owned()],
                master: "main".to_owned(),
                tls: false,
                username: Some("u".to_owned()),
                password: Some("pw".to_owned()),
                db: 3,
            })
        );
        for bad in [
            "http://h",
            "redis+cluster://a:1,,b:2",
            "redis+cluster://a:x",
            "redis+cluster://a:1/0",
            "redis+sentinel://a:1",
            "redis+sentinel://a:1/m/x",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
