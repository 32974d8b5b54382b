//! The queue under [`crate::Lock`] and [`crate::Election`]: ephemeral-sequential tickets in a
//! directory, served lowest first, each waiter watching only its predecessor.

use scopekeeper_client::{Client, CreateMode, Error, ErrorCode};

/// A place in a queue: this client's ephemeral-sequential node.
pub struct Ticket<'c> {
    client: &'c Client,
    dir: String,
    name: String,
}

/// The ten-digit sequence ZooKeeper appends to a sequential node's name.
fn sequence(name: &str) -> Option<u64> {
    let digits = name.get(name.len().checked_sub(10)?..)?;
    digits.parse().ok()
}

/// Queue entries sorted by sequence (their prefixes may differ: names embed the session).
async fn entries(client: &Client, dir: &str) -> Result<Vec<String>, Error> {
    let (mut names, _) = client.children(dir).await?;
    names.retain(|n| sequence(n).is_some());
    names.sort_by_key(|n| sequence(n));
    Ok(names)
}

/// The entry served now, if any.
pub(crate) async fn first(client: &Client, dir: &str) -> Result<Option<String>, Error> {
    match entries(client, dir).await {
        Ok(names) => Ok(names.into_iter().next()),
        Err(e) if e.code() == ErrorCode::NoNode => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) async fn ensure_parents(client: &Client, path: &str) -> Result<(), Error> {
    let mut at = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at.push('/');
        at.push_str(part);
        match client.create(&at, b"", CreateMode::Persistent).await {
            Ok(_) => {}
            Err(e) if e.code() == ErrorCode::NodeExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Joins the queue at `dir`. The node's name carries the session id, so a create whose
/// outcome was lost (`ConnectionLoss`) is found again instead of leaving an orphan in line.
pub(crate) async fn join<'c>(
    client: &'c Client,
    dir: &str,
    prefix: &str,
    data: &[u8],
) -> Result<Ticket<'c>, Error> {
    let Some(session) = client.session_id() else {
        return Err(Error::Api(scopekeeper_client::ApiError::new(
            ErrorCode::BadArguments,
            "queue recipes need a session: connect with Client::connect_with_session",
        )));
    };
    ensure_parents(client, dir).await?;
    let mine = format!("{prefix}{session:016x}-");
    loop {
        match client
            .create(
                &format!("{dir}/{mine}"),
                data,
                CreateMode::EphemeralSequential,
            )
            .await
        {
            Ok((path, _)) => {
                let name = path.rsplit('/').next().unwrap_or_default().to_string();
                return Ok(Ticket {
                    client,
                    dir: dir.to_string(),
                    name,
                });
            }
            Err(e) if e.code() == ErrorCode::ConnectionLoss => {
                if let Some(name) = entries(client, dir)
                    .await?
                    .into_iter()
                    .find(|n| n.starts_with(&mine))
                {
                    return Ok(Ticket {
                        client,
                        dir: dir.to_string(),
                        name,
                    });
                }
            }
            Err(e) => return Err(e),
        }
    }
}

impl Ticket<'_> {
    /// The ticket's node.
    pub fn path(&self) -> String {
        format!("{}/{}", self.dir, self.name)
    }

    pub(crate) async fn is_first(&self) -> Result<bool, Error> {
        Ok(first(self.client, &self.dir).await?.as_deref() == Some(self.name.as_str()))
    }

    /// Waits until this ticket is the lowest in its queue.
    pub(crate) async fn wait_for_turn(&self) -> Result<(), Error> {
        loop {
            let names = entries(self.client, &self.dir).await?;
            let Some(at) = names.iter().position(|n| *n == self.name) else {
                return Err(Error::Api(scopekeeper_client::ApiError::new(
                    ErrorCode::SessionExpired,
                    format!(
                        "{} is gone: the session ended while waiting in line",
                        self.path()
                    ),
                )));
            };
            if at == 0 {
                return Ok(());
            }
            // Watch only the one just ahead: when it goes, look again.
            let ahead = format!("{}/{}", self.dir, names[at - 1]);
            let (stat, fired) = self.client.exists_and_watch(&ahead).await?;
            if stat.is_some() {
                fired.await.map_err(|_| {
                    Error::Api(scopekeeper_client::ApiError::new(
                        ErrorCode::SessionExpired,
                        "the session ended while waiting in line",
                    ))
                })?;
            }
        }
    }

    /// Leaves the queue: releases the lock, or steps down from leadership.
    pub async fn release(self) -> Result<(), Error> {
        match self.client.delete(&self.path(), -1).await {
            Ok(()) => Ok(()),
            Err(e) if e.code() == ErrorCode::NoNode => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sequences_are_the_last_ten_digits() {
        assert_eq!(
            super::sequence("lock-00000000000000ab-0000000042"),
            Some(42)
        );
        assert_eq!(super::sequence("candidate-0000000007"), Some(7));
        assert_eq!(super::sequence("short"), None);
        assert_eq!(super::sequence("lock-abcdefghij"), None);
    }
}
