//! One call: a datagram out, a datagram back, a timeout. And the serving
//! side's halves of the same.

use std::cell::RefCell;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use turmoil::net::UdpSocket;

use super::wire::Frame;
use super::{RpcConfig, FRAME_BYTES_MAX};
use crate::doubles::clock::sim_now_ms;

thread_local! {
    /// Where datagrams land before they are decoded. One per thread (a
    /// simulation runs on one), borrowed only between awaits; the pages
    /// are touched only as far as frames reach.
    static RECV_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; FRAME_BYTES_MAX]);
    /// Where frames are encoded before they are sent: turmoil copies a
    /// datagram's bytes anyway, so encoding into a fresh vector that grows
    /// by doubling would allocate and copy once or more per frame for
    /// nothing. Borrowed only inside [`send_frame`], which never awaits.
    static SEND_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; FRAME_BYTES_MAX]);
}

/// Encode `frame` and send it from `socket` to `to` in one step. A frame
/// over [`FRAME_BYTES_MAX`] is not sent: `Ok(Err(len))` gives its size.
fn send_frame<T: Serialize, A: turmoil::ToSocketAddrs>(
    socket: &UdpSocket,
    to: A,
    frame: &Frame<T>,
) -> io::Result<Result<(), usize>> {
    SEND_BUF.with_borrow_mut(|buf| match postcard::to_slice(frame, buf) {
        Ok(bytes) => socket.try_send_to(bytes, to).map(|_| Ok(())),
        // Only a frame too large for the buffer fails to encode; its size
        // is measured the slow way, on this rare path alone.
        Err(_) => Ok(Err(postcard::to_stdvec(frame).map_or(usize::MAX, |v| v.len()))),
    })
}

/// Why a call got no answer.
#[derive(Debug)]
pub(crate) enum Lost {
    /// No reply in time, or the network refused: the outcome is unknown.
    Unknown { code: &'static str, message: String },
    /// The request frame is over [`FRAME_BYTES_MAX`]; it was not sent.
    TooLarge(usize),
}

fn unknown(code: &'static str, err: impl std::fmt::Display) -> Lost {
    Lost::Unknown {
        code,
        message: err.to_string(),
    }
}

/// The client side of one host's calls.
#[derive(Debug)]
pub(crate) struct Caller {
    config: RpcConfig,
    port: u16,
    calls: AtomicU64,
}

impl Caller {
    pub fn new(config: RpcConfig, port: u16) -> Self {
        Self {
            config,
            port,
            calls: AtomicU64::new(0),
        }
    }

    /// Send `request` and wait for its reply for the timeout plus `wait_ms`.
    pub async fn call<Req: Serialize, Rep: DeserializeOwned>(&self, request: &Req, wait_ms: u64) -> Result<Rep, Lost> {
        // Ids pair replies with requests on a port that may be reused later:
        // the send time makes a stale reply's id differ from the new call's.
        let count = self.calls.fetch_add(1, Ordering::Relaxed);
        let id = (sim_now_ms() << 20) | (count & 0xF_FFFF);
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .await
            .map_err(|e| unknown("SocketError", e))?;
        let frame = Frame { id, body: request };
        send_frame(&socket, (self.config.host.as_str(), self.port), &frame)
            .map_err(|e| unknown("ConnectionRefused", e))?
            .map_err(Lost::TooLarge)?;
        let limit = Duration::from_millis(self.config.timeout_ms + wait_ms);
        match tokio::time::timeout(limit, recv_reply(&socket, id)).await {
            Ok(reply) => reply,
            Err(_) => Err(unknown(
                "RequestTimeout",
                format!("no reply from {} within {} ms", self.config.host, limit.as_millis()),
            )),
        }
    }
}

async fn recv_reply<Rep: DeserializeOwned>(socket: &UdpSocket, id: u64) -> Result<Rep, Lost> {
    loop {
        match recv_frame::<Rep>(socket).await {
            Ok((frame, _)) if frame.id == id => return Ok(frame.body),
            Ok(_) => continue,
            Err(e) => return Err(unknown("SocketError", e)),
        }
    }
}

/// The next frame that decodes as `Frame<T>`; others are dropped.
pub(crate) async fn recv_frame<T: DeserializeOwned>(socket: &UdpSocket) -> io::Result<(Frame<T>, SocketAddr)> {
    loop {
        socket.readable().await?;
        let got = RECV_BUF.with_borrow_mut(|buf| match socket.try_recv_from(buf) {
            Ok((len, from)) => Ok(postcard::from_bytes::<Frame<T>>(&buf[..len]).ok().map(|f| (f, from))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        })?;
        if let Some(got) = got {
            return Ok(got);
        }
    }
}

/// Answer request `id` from `to`. A reply that cannot be sent is lost,
/// which the caller sees as a timeout.
pub(crate) fn reply<T: Serialize>(socket: &UdpSocket, to: SocketAddr, id: u64, body: &T) {
    match send_frame(socket, to, &Frame { id, body }) {
        Ok(Ok(())) => {}
        Ok(Err(len)) => tracing::debug!(%to, len, "reply lost: over the frame limit"),
        Err(e) => tracing::debug!(%to, error = %e, "reply lost"),
    }
}
