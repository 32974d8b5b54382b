//! Frames: a u32 big-endian length, then a postcard body. Every read is capped before a byte of
//! the body is buffered, so a hostile length costs nothing.

use futures::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// Writes one frame, header and body in one write (one STREAM frame, where two writes could
/// let the connection send the header alone).
pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    value: &T,
    cap: usize,
) -> Result<(), Error> {
    let mut frame =
        postcard::to_extend(value, vec![0u8; 4]).map_err(|e| Error::Encode(e.to_string()))?;
    let len = frame.len() - 4;
    if len > cap {
        return Err(Error::FrameTooLarge { len, cap });
    }
    let header = u32::try_from(len).map_err(|_| Error::FrameTooLarge { len, cap })?;
    frame[..4].copy_from_slice(&header.to_be_bytes());
    send.write_all(&frame).await.map_err(Error::from_write)?;
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

/// Reads the end of a stream whose last frame has been read, if the end is here already; never
/// waits. A stream dropped before its end is read makes quinn send the peer a STOP_SENDING,
/// even when the end has arrived: one spurious frame each way per request and response. The
/// peer finishes right after its frame, so the end nearly always arrives with it. Bytes after
/// the last frame are the peer's error.
pub fn read_end(recv: &mut quinn::RecvStream) -> Result<(), Error> {
    let mut probe = [0u8; 1];
    match recv.read(&mut probe).now_or_never() {
        Some(Ok(Some(_))) => Err(Error::Malformed(
            "bytes after the stream's last frame".into(),
        )),
        // The end, or not here yet, or the stream failed: dropping it does what is left.
        _ => Ok(()),
    }
}

/// Reads a stream's one and last frame, and its end (see [`read_end`]).
pub async fn expect_last_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    cap: usize,
) -> Result<T, Error> {
    let value = expect_frame(recv, cap).await?;
    read_end(recv)?;
    Ok(value)
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
