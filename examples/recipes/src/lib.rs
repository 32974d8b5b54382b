//! ZooKeeper's classic recipes on the native client, each a few dozen lines over sessions,
//! ephemeral-sequential nodes and watches:
//!
//! - [`Lock`]: a fair mutual-exclusion lock. Each contender creates an ephemeral-sequential
//!   node; the lowest holds the lock, and every other watches only the node just below its own
//!   (no herd when the lock changes hands).
//! - [`Election`]: leader election, the same queue: the lowest candidate leads, and a leader
//!   whose session ends is replaced by the next in line.
//! - [`Registry`]: a service registry: instances register as ephemeral nodes that vanish with
//!   their process, and watchers see the membership change.
//!
//! Each recipe's nodes go when its client's session ends (closed, or expired after a crash),
//! so a dead holder never keeps a lock or a leadership.

use scopekeeper_client::{Client, CreateMode, Error, ErrorCode};

mod queue;

pub use queue::Ticket;

/// A distributed lock at a path (its parent nodes are created as needed).
pub struct Lock<'c> {
    client: &'c Client,
    dir: String,
}

impl<'c> Lock<'c> {
    /// The lock at `dir`. The client must have a session (`Client::connect_with_session`).
    pub fn new(client: &'c Client, dir: &str) -> Lock<'c> {
        Lock {
            client,
            dir: dir.trim_end_matches('/').to_string(),
        }
    }

    /// Waits until this client holds the lock; the guard's [`Ticket::release`] lets go.
    pub async fn acquire(&self) -> Result<Ticket<'c>, Error> {
        let ticket = queue::join(self.client, &self.dir, "lock-", b"").await?;
        ticket.wait_for_turn().await?;
        Ok(ticket)
    }

    /// Takes the lock if nobody holds it or waits for it; `None` otherwise.
    pub async fn try_acquire(&self) -> Result<Option<Ticket<'c>>, Error> {
        let ticket = queue::join(self.client, &self.dir, "lock-", b"").await?;
        if ticket.is_first().await? {
            return Ok(Some(ticket));
        }
        ticket.release().await?;
        Ok(None)
    }
}

/// Leader election among the candidates at a path.
pub struct Election<'c> {
    client: &'c Client,
    dir: String,
}

impl<'c> Election<'c> {
    pub fn new(client: &'c Client, dir: &str) -> Election<'c> {
        Election {
            client,
            dir: dir.trim_end_matches('/').to_string(),
        }
    }

    /// Stands as a candidate with `data` (what followers learn of the leader, e.g. its
    /// address) and waits until elected. Leadership lasts until [`Ticket::release`] or the end
    /// of the session.
    pub async fn lead(&self, data: &[u8]) -> Result<Ticket<'c>, Error> {
        let ticket = queue::join(self.client, &self.dir, "candidate-", data).await?;
        ticket.wait_for_turn().await?;
        Ok(ticket)
    }

    /// The current leader's data, if any candidate stands.
    pub async fn leader(&self) -> Result<Option<Vec<u8>>, Error> {
        loop {
            let Some(first) = queue::first(self.client, &self.dir).await? else {
                return Ok(None);
            };
            match self.client.get(&format!("{}/{first}", self.dir)).await {
                Ok((data, _)) => return Ok(Some(data)),
                // The leader just stepped down: ask again.
                Err(e) if e.code() == ErrorCode::NoNode => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// A registry of service instances under `/services` (or any root).
pub struct Registry<'c> {
    client: &'c Client,
    root: String,
}

/// One registered instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub name: String,
    pub address: String,
}

impl<'c> Registry<'c> {
    pub fn new(client: &'c Client, root: &str) -> Registry<'c> {
        Registry {
            client,
            root: root.trim_end_matches('/').to_string(),
        }
    }

    fn service_dir(&self, service: &str) -> String {
        format!("{}/{service}", self.root)
    }

    /// Registers `instance` of `service` at `address` for as long as this client's session
    /// lasts. An instance name is unique per service: a second registration is `NodeExists`.
    pub async fn register(
        &self,
        service: &str,
        instance: &str,
        address: &str,
    ) -> Result<(), Error> {
        let dir = self.service_dir(service);
        queue::ensure_parents(self.client, &dir).await?;
        self.client
            .create(
                &format!("{dir}/{instance}"),
                address.as_bytes(),
                CreateMode::Ephemeral,
            )
            .await?;
        Ok(())
    }

    /// Takes `instance` out of the registry at once (its session may go on).
    pub async fn deregister(&self, service: &str, instance: &str) -> Result<(), Error> {
        self.client
            .delete(&format!("{}/{instance}", self.service_dir(service)), -1)
            .await
    }

    /// The instances of `service` now, sorted by name.
    pub async fn instances(&self, service: &str) -> Result<Vec<Instance>, Error> {
        let dir = self.service_dir(service);
        let names = match self.client.children(&dir).await {
            Ok((names, _)) => names,
            Err(e) if e.code() == ErrorCode::NoNode => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            match self.client.get(&format!("{dir}/{name}")).await {
                Ok((data, _)) => out.push(Instance {
                    address: String::from_utf8_lossy(&data).into_owned(),
                    name,
                }),
                // Gone between the listing and the read.
                Err(e) if e.code() == ErrorCode::NoNode => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Follows `service`'s membership: the first value is the current list, then one more
    /// each time an instance comes or goes. Needs a session.
    pub async fn follow(&self, service: &str) -> Result<Membership<'c>, Error> {
        let dir = self.service_dir(service);
        queue::ensure_parents(self.client, &dir).await?;
        // Persistent: no change slips between two one-shot watches.
        let events = self.client.add_watch(&dir, false).await?;
        Ok(Membership {
            registry: Registry {
                client: self.client,
                root: self.root.clone(),
            },
            service: service.to_string(),
            events,
            first: true,
        })
    }
}

/// A service's membership as it changes; see [`Registry::follow`].
pub struct Membership<'c> {
    registry: Registry<'c>,
    service: String,
    events: scopekeeper_client::WatchStream,
    first: bool,
}

impl Membership<'_> {
    /// The membership now on the first call; afterwards it waits for the next change and
    /// returns the list after it. `None` once the session has ended.
    pub async fn next(&mut self) -> Option<Result<Vec<Instance>, Error>> {
        if !std::mem::take(&mut self.first) {
            self.events.recv().await?;
            // Several changes may have come at once; one listing covers them all.
            while self.events.try_recv().is_ok() {}
        }
        Some(self.registry.instances(&self.service).await)
    }
}

/// Creates `path` and every missing ancestor as persistent empty nodes (racing another
/// creator is fine).
pub async fn ensure_path(client: &Client, path: &str) -> Result<(), Error> {
    queue::ensure_parents(client, path).await
}
