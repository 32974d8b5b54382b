//! Frames: a u32 big-endian length, then a postcard body. Every read is capped before a byte of
//! the body is buffered, so a hostile length costs nothing.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// Writes one frame.
pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    value: &T,
    cap: usize,
) -> Result<(), Error> {
    let body = postcard::to_stdvec(value).map_err(|e| Error::Encode(e.to_string()))?;
    if body.len() > cap {
        return Err(Error::FrameTooLarge {
            len: body.len(),
            cap,
        });
    }
    let len = u32::try_from(body.len()).map_err(|_| Error::FrameTooLarge {
        len: body.len(),
        cap,
    })?;
    send.write_all(&len.to_be_bytes())
        .await
        .map_err(Error::from_write)?;
    send.write_all(&body).await.map_err(Error::from_write)?;
    Ok(())
}

/// Reads one frame, or `Ok(None)` if the peer finished the stream cleanly before a new frame.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    cap: usize,
) -> Result<Option<T>, Error> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(n)) => {
            return Err(Error::Malformed(format!(
                "stream ended {n} bytes into a frame header"
            )));
        }
        Err(quinn::ReadExactError::ReadError(e)) => return Err(Error::from_read(e)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > cap {
        return Err(Error::FrameTooLarge { len, cap });
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(n) => {
            Error::Malformed(format!("stream ended {n} bytes into a {len}-byte frame"))
        }
        quinn::ReadExactError::ReadError(e) => Error::from_read(e),
    })?;
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(|e| Error::Malformed(format!("undecodable {len}-byte frame: {e}")))
}

/// Reads exactly one frame, treating a clean end of stream as an error.
pub async fn expect_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    cap: usize,
) -> Result<T, Error> {
    read_frame(recv, cap)
        .await?
        .ok_or_else(|| Error::Malformed("stream ended before the expected frame".into()))
}
