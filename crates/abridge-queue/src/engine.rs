//! Which Redis the fleet talks to: one server, a Redis Cluster, or a Sentinel-watched master,
//! chosen by the URL's scheme (README.md, "Configuration"):
//!
//! - `redis://` / `rediss://`: one server;
//! - `redis+cluster://[user:pass@]host:port[,host:port...]/`: a cluster, from seed nodes (the
//!   client learns the rest, and follows MOVED and ASK);
//! - `redis+sentinel://[user:pass@]host:port[,host:port...]/MASTER`: the master the sentinels
//!   name `MASTER`, found again after a failover.
//!
//! A shard's keys share one hash tag, so on a cluster they live in one slot: every script
//! runs on one node, as on a single server (a queue has one shard unless
//! `ABRIDGE_QUEUE_SHARDS` says more; see `shards`).

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::Sentinel;
use redis::{AsyncConnectionConfig, Client, RedisError, RedisResult};
use tokio::sync::Mutex;

/// A parsed Redis URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Single(String),
    /// Seed nodes, as `redis://` URLs.
    Cluster(Vec<String>),
    /// Sentinel nodes (`redis://` URLs), the master's name, and the URL prefix (credentials)
    /// for the master itself.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        auth: String,
    },
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, String> {
        let list = |rest: &str| -> Result<(String, Vec<String>, String), String> {
            let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
            let (auth, hosts) = match hosts.rsplit_once('@') {
                Some((auth, hosts)) => (format!("{auth}@"), hosts),
                None => (String::new(), hosts),
            };
            let nodes: Vec<String> = hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| format!("redis://{auth}{h}/"))
                .collect();
            if nodes.is_empty() {
                return Err("no host:port".into());
            }
            Ok((auth, nodes, path.trim_matches('/').to_owned()))
        };
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let (_, nodes, _) = list(rest)?;
            return Ok(Self::Cluster(nodes));
        }
        if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (auth, _, master) = list(rest)?;
            if master.is_empty() || master.contains('/') {
                return Err(
                    "the path must name the master (redis+sentinel://host:port/NAME)".into(),
                );
            }
            let (_, sentinels, _) = list(rest.rsplit_once('@').map_or(rest, |(_, h)| h))?;
            return Ok(Self::Sentinel {
                sentinels,
                master,
                auth,
            });
        }
        Ok(Self::Single(url.to_owned()))
    }
}

/// Makes connections to the target: multiplexed ones to a server (the master, with
/// Sentinel), or cluster connections that route each command to its slot's node.
pub(crate) enum Connector {
    Single(Client),
    Cluster {
        client: Box<ClusterClient>,
        /// One node's client, for pub/sub (a cluster carries a message to every node).
        seeds: Vec<Client>,
    },
    Sentinel {
        sentinel: Arc<Mutex<Sentinel>>,
        master: String,
        auth: String,
    },
}

/// A connection of any kind.
pub(crate) enum AnyConnection {
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Connector {
    pub(crate) fn new(target: &Target) -> RedisResult<Self> {
        Ok(match target {
            Target::Single(url) => Self::Single(Client::open(url.as_str())?),
            Target::Cluster(nodes) => Self::Cluster {
                client: Box::new(
                    ClusterClientBuilder::new(nodes.clone())
                        .connection_timeout(crate::CONNECT_TIMEOUT)
                        .response_timeout(crate::RESPONSE_TIMEOUT)
                        .build()?,
                ),
                seeds: nodes
                    .iter()
                    .map(|n| Client::open(n.as_str()))
                    .collect::<RedisResult<_>>()?,
            },
            Target::Sentinel {
                sentinels,
                master,
                auth,
            } => Self::Sentinel {
                sentinel: Arc::new(Mutex::new(Sentinel::build(sentinels.clone())?)),
                master: master.clone(),
                auth: auth.clone(),
            },
        })
    }

    pub(crate) async fn connect(
        &self,
        config: &AsyncConnectionConfig,
    ) -> RedisResult<AnyConnection> {
        Ok(match self {
            Self::Single(client) => AnyConnection::Multiplexed(
                client
                    .get_multiplexed_async_connection_with_config(config)
                    .await?,
            ),
            Self::Cluster { client, .. } => {
                AnyConnection::Cluster(client.get_async_connection().await?)
            }
            Self::Sentinel { .. } => AnyConnection::Multiplexed(
                self.client()
                    .await?
                    .get_multiplexed_async_connection_with_config(config)
                    .await?,
            ),
        })
    }

    /// A client for one server: the server, the master now, or the first cluster seed that
    /// answers (for pub/sub).
    pub(crate) async fn client(&self) -> RedisResult<Client> {
        match self {
            Self::Single(client) => Ok(client.clone()),
            Self::Cluster { seeds, .. } => {
                let mut last: Option<RedisError> = None;
                for seed in seeds {
                    match seed.get_multiplexed_async_connection().await {
                        Ok(_) => return Ok(seed.clone()),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.expect("a cluster has a seed"))
            }
            Self::Sentinel {
                sentinel,
                master,
                auth,
            } => {
                let found = sentinel.lock().await.async_master_for(master, None).await?;
                let info = found.get_connection_info();
                if auth.is_empty() {
                    return Ok(found);
                }
                // The sentinels name the master's address; the credentials are the URL's.
                Client::open(format!("redis://{auth}{}/", info.addr()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_engine() {
        assert_eq!(
            Target::parse("redis://127.0.0.1:6379/").unwrap(),
            Target::Single("redis://127.0.0.1:6379/".into())
        );
        assert_eq!(
            Target::parse("redis+cluster://u:p@a:7000,b:7001/").unwrap(),
            Target::Cluster(vec![
                "redis://u:p@a:7000/".into(),
                "redis://u:p@b:7001/".into()
            ])
        );
        assert_eq!(
            Target::parse("redis+sentinel://u:p@s1:26379,s2:26379/mymaster").unwrap(),
            Target::Sentinel {
                sentinels: vec!["redis://s1:26379/".into(), "redis://s2:26379/".into()],
                master: "mymaster".into(),
                auth: "u:p@".into(),
            }
        );
        assert!(Target::parse("redis+sentinel://s1:26379/").is_err());
        assert!(Target::parse("redis+cluster:///").is_err());
    }
}
