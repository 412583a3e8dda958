//! An upgraded (WebSocket) connection after the `101`: the caller's and the
//! instance's connections copied both ways until either side ends, within an
//! idle timeout and a maximum lifetime, and closed early when the instance is
//! drained or deleted. When the router ends a connection itself it says so
//! like a WebSocket endpoint would: a Close frame to each side, written at a
//! frame boundary (`ws_frame.rs`), then the connection's end.
//!
//! Three small pieces: a `Pump` per direction (forward, then close), the
//! `Activity` both pumps mark, and the `watchdog` that decides when to close.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::ws_frame::{FrameScanner, close_frame};

/// Set to a reason when the instance behind a connection goes away (it is
/// drained after a redeploy, or its function is deleted).
pub type GoingAway = watch::Receiver<Option<&'static str>>;

/// WebSocket close code 1001: the endpoint is going away.
const GOING_AWAY: u16 = 1001;
/// Once the router closes a connection: how long a side may take to finish
/// the frame it is in and to answer the Close, before the connection is cut.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
const BUF: usize = 16 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct TunnelLimits {
    /// Closed after this long with no byte either way.
    pub idle: Duration,
    /// Closed after this long whatever happens.
    pub max: Duration,
}

/// Why the router closes a connection: the reason the Close frames carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseWhy(pub &'static str);

const IDLE: CloseWhy = CloseWhy("idle timeout");
const LIFETIME: CloseWhy = CloseWhy("connection time limit");
const FAILED: CloseWhy = CloseWhy("the other side failed");
const INSTANCE_ENDED: CloseWhy = CloseWhy("the function's instance went away");

/// Copies `caller` ⇄ `instance` until both directions end, or closes both
/// cleanly when a limit is reached or `going_away` says so.
pub async fn run<C, I>(caller: C, instance: I, limits: TunnelLimits, going_away: Option<GoingAway>)
where
    C: AsyncRead + AsyncWrite + Send,
    I: AsyncRead + AsyncWrite + Send,
{
    let (caller_rx, caller_tx) = tokio::io::split(caller);
    let (instance_rx, instance_tx) = tokio::io::split(instance);
    let activity = Activity::new();
    let (stop_tx, stop_rx) = watch::channel(None);
    // Towards the caller: unmasked frames; towards the instance (a server): masked.
    let down = Pump::new(instance_rx, caller_tx, DOWN, None).run(&activity, stop_rx.clone());
    let up = Pump::new(caller_rx, instance_tx, UP, Some(mask_key())).run(&activity, stop_rx);
    let pumps = async { tokio::join!(down, up) };
    tokio::pin!(pumps);
    tokio::select! {
        _ = &mut pumps => return,
        verdict = watchdog(&activity, limits, going_away) => match verdict {
            Some(why) => {
                tracing::debug!(reason = why.0, "closing an upgraded connection");
                let _ = stop_tx.send(Some(why));
            }
            // Both closing handshakes are done: nothing more may be sent.
            None => return,
        },
    }
    // Bounded: a side that never finishes its frame or never answers the
    // Close does not keep the connection, nor the instance's lease.
    let _ = tokio::time::timeout(CLOSE_WAIT, pumps).await;
}

/// One direction's marks in `Activity::marks`.
#[derive(Debug, Clone, Copy)]
struct Side {
    /// It passed a Close frame.
    close: u8,
    /// It ended (end of stream).
    end: u8,
}

/// Instance → caller.
const DOWN: Side = Side { close: 1, end: 2 };
/// Caller → instance.
const UP: Side = Side { close: 4, end: 8 };
const BROKE: u8 = 16;

/// When either direction last moved a byte, and what each has done so far.
struct Activity {
    start: Instant,
    /// Milliseconds since `start`.
    last: AtomicU64,
    marks: AtomicU8,
    /// Woken on each new mark.
    marked: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            marks: AtomicU8::new(0),
            marked: Notify::new(),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    fn mark(&self, m: u8) {
        if self.marks.fetch_or(m, Ordering::AcqRel) & m != m {
            // `notify_one` keeps the permit if the watchdog is not waiting yet.
            self.marked.notify_one();
        }
    }

    fn fail(&self) {
        self.mark(BROKE);
    }

    fn broke(&self) -> bool {
        self.marks.load(Ordering::Acquire) & BROKE != 0
    }

    /// One direction ended and the other sent its Close: a WebSocket endpoint
    /// sends nothing after its Close, so the exchange is over (even if a
    /// caller keeps its end open).
    fn finished(&self) -> bool {
        let m = self.marks.load(Ordering::Acquire);
        let has = |bits: u8| m & bits == bits;
        has(DOWN.end | UP.close) || has(UP.end | DOWN.close)
    }
}

/// Resolves with the reason once the router should close the connection, or
/// with `None` once the two sides have finished closing it themselves.
async fn watchdog(
    activity: &Activity,
    limits: TunnelLimits,
    mut going_away: Option<GoingAway>,
) -> Option<CloseWhy> {
    let end = activity.start + limits.max;
    loop {
        let marked = activity.marked.notified();
        if activity.broke() {
            return Some(FAILED);
        }
        if activity.finished() {
            return None;
        }
        let idle_at = activity.last() + limits.idle;
        tokio::select! {
            _ = tokio::time::sleep_until(idle_at.min(end)) => {
                let now = Instant::now();
                if now >= end {
                    return Some(LIFETIME);
                }
                if now >= activity.last() + limits.idle {
                    return Some(IDLE);
                }
                // bytes moved meanwhile: wait again from the last of them
            }
            why = instance_going(&mut going_away) => return Some(CloseWhy(why)),
            _ = marked => {}
        }
    }
}

/// Resolves once the instance goes away; never when it cannot tell.
async fn instance_going(going_away: &mut Option<GoingAway>) -> &'static str {
    if let Some(rx) = going_away
        && let Ok(why) = rx.wait_for(Option::is_some).await
        && let Some(why) = *why
    {
        return why;
    }
    std::future::pending().await
}

/// Mask keys need not be secret here (they guard browsers' caches against
/// crafted payloads, and the payload is ours), only varied.
fn mask_key() -> [u8; 4] {
    let h = RandomState::new().hash_one(std::time::Instant::now());
    (h as u32).to_ne_bytes()
}

/// One direction: bytes from `from` to `to`, frame boundaries followed.
struct Pump<R, W> {
    from: R,
    to: W,
    side: Side,
    scan: FrameScanner,
    /// Frames written to `to` are masked with this key (towards the instance).
    mask: Option<[u8; 4]>,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Pump<R, W> {
    fn new(from: R, to: W, side: Side, mask: Option<[u8; 4]>) -> Self {
        Self {
            from,
            to,
            side,
            scan: FrameScanner::default(),
            mask,
            buf: vec![0; BUF],
        }
    }

    async fn run(mut self, activity: &Activity, mut stop: watch::Receiver<Option<CloseWhy>>) {
        let why = loop {
            let read = tokio::select! {
                biased;
                why = stop.wait_for(Option::is_some) => match why {
                    Ok(why) => break *why,
                    Err(_) => return,
                },
                read = self.from.read(&mut self.buf) => read,
            };
            match read {
                Ok(0) => {
                    self.ended().await;
                    return activity.mark(self.side.end);
                }
                Ok(n) => {
                    self.scan.advance(&self.buf[..n], false);
                    if self.to.write_all(&self.buf[..n]).await.is_err() {
                        return activity.fail();
                    }
                    activity.touch();
                    if self.scan.close_seen() {
                        activity.mark(self.side.close);
                    }
                }
                Err(_) => return activity.fail(),
            }
        };
        if let Some(why) = why {
            self.close(why).await;
        }
    }

    /// `from` ended. Its end is passed on; towards the caller, an end with
    /// no Close frame first (the instance was stopped or crashed) becomes one.
    async fn ended(&mut self) {
        if self.mask.is_none() && !self.scan.close_seen() && self.scan.at_boundary() {
            let _ = self.say_close(INSTANCE_ENDED).await;
        }
        let _ = self.to.shutdown().await;
    }

    /// The router closes: the current frame is finished, a Close frame goes
    /// out (unless this side already sent one), then whatever `from` still
    /// sends (its Close reply) is read and dropped until it ends.
    async fn close(&mut self, why: CloseWhy) {
        while !self.scan.at_boundary() {
            let n = match self.from.read(&mut self.buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let k = self.scan.advance(&self.buf[..n], true);
            if self.to.write_all(&self.buf[..k]).await.is_err() {
                return;
            }
        }
        if !self.scan.close_seen() && self.say_close(why).await.is_err() {
            return;
        }
        let _ = self.to.shutdown().await;
        while let Ok(n) = self.from.read(&mut self.buf).await {
            if n == 0 {
                break;
            }
        }
    }

    async fn say_close(&mut self, why: CloseWhy) -> std::io::Result<()> {
        let frame = close_frame(GOING_AWAY, why.0, self.mask);
        self.to.write_all(&frame).await?;
        self.to.flush().await
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{DuplexStream, duplex};

    use super::*;

    const LONG: TunnelLimits = TunnelLimits {
        idle: Duration::from_secs(3600),
        max: Duration::from_secs(3600),
    };

    /// A tunnel between two in-memory connections: (caller's end, instance's
    /// end, the going-away switch, the tunnel task).
    fn tunnel() -> (
        DuplexStream,
        DuplexStream,
        watch::Sender<Option<&'static str>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (caller, caller_side) = duplex(1 << 20);
        let (instance, instance_side) = duplex(1 << 20);
        let (going_tx, going_rx) = watch::channel(None);
        let task = tokio::spawn(run(caller_side, instance_side, LONG, Some(going_rx)));
        (caller, instance, going_tx, task)
    }

    async fn read_exact(from: &mut DuplexStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        from.read_exact(&mut buf).await.unwrap();
        buf
    }

    async fn read_to_end(from: &mut DuplexStream) -> Vec<u8> {
        let mut buf = Vec::new();
        from.read_to_end(&mut buf).await.unwrap();
        buf
    }

    #[tokio::test]
    async fn bytes_pass_both_ways_and_an_end_is_passed_on() {
        let (mut caller, mut instance, _going, task) = tunnel();
        let masked_hi = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        caller.write_all(&masked_hi).await.unwrap();
        assert_eq!(read_exact(&mut instance, 8).await, masked_hi);
        let close = close_frame(1000, "bye", None);
        instance.write_all(&close).await.unwrap();
        instance.shutdown().await.unwrap();
        // the instance's own Close, not one of the router's
        assert_eq!(read_exact(&mut caller, close.len()).await, close);
        caller.shutdown().await.unwrap();
        assert!(read_to_end(&mut caller).await.is_empty());
        assert!(read_to_end(&mut instance).await.is_empty());
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_finished_handshake_ends_the_tunnel_though_the_caller_lingers() {
        let (mut caller, mut instance, _going, task) = tunnel();
        let masked_close = close_frame(1000, "", Some([1, 2, 3, 4]));
        caller.write_all(&masked_close).await.unwrap();
        assert_eq!(
            read_exact(&mut instance, masked_close.len()).await,
            masked_close
        );
        let reply = close_frame(1000, "", None);
        instance.write_all(&reply).await.unwrap();
        instance.shutdown().await.unwrap();
        assert_eq!(read_to_end(&mut caller).await, reply);
        // the caller keeps its end open; the tunnel (and its slot) still goes
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the tunnel ended")
            .unwrap();
        drop((caller, instance));
    }

    #[tokio::test]
    async fn a_close_waits_for_the_frame_in_flight_and_both_sides_hear_it() {
        let (mut caller, mut instance, going, task) = tunnel();
        // an unmasked binary frame of 10 bytes, half of it sent
        let frame: Vec<u8> = [&[0x82, 10][..], &[7u8; 10]].concat();
        instance.write_all(&frame[..6]).await.unwrap();
        assert_eq!(read_exact(&mut caller, 6).await, frame[..6]);
        going.send(Some("function redeployed")).unwrap();
        // (a single-threaded test runtime: the tunnel task runs in these yields
        // and takes the signal before the rest of the frame is written)
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // the frame ends, and a next one starts in the same write: only the
        // end of the current one is passed, then the Close
        instance
            .write_all(&[&frame[6..], &frame[..]].concat())
            .await
            .unwrap();
        let expect = [
            &frame[6..],
            &close_frame(1001, "function redeployed", None)[..],
        ]
        .concat();
        assert_eq!(read_to_end(&mut caller).await, expect);

        // the instance gets a masked Close (a server must not get unmasked frames)
        let to_instance = read_exact(&mut instance, 2).await;
        assert_eq!(to_instance, [0x88, 0x80 | 21]);
        let key = read_exact(&mut instance, 4).await;
        let payload: Vec<u8> = read_exact(&mut instance, 21)
            .await
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(payload, b"\x03\xe9function redeployed");
        drop((caller, instance));
        task.await.unwrap();
    }

    #[tokio::test]
    async fn an_instance_that_vanishes_mid_conversation_is_a_close_to_the_caller() {
        let (mut caller, instance, _going, task) = tunnel();
        drop(instance);
        assert_eq!(
            read_to_end(&mut caller).await,
            close_frame(1001, INSTANCE_ENDED.0, None)
        );
        drop(caller);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_and_traffic_keeps_one_open() {
        let (mut caller, caller_side) = duplex(1 << 16);
        let (mut instance, instance_side) = duplex(1 << 16);
        let limits = TunnelLimits {
            idle: Duration::from_secs(10),
            max: Duration::from_secs(25),
        };
        let task = tokio::spawn(run(caller_side, instance_side, limits, None));
        // a ping every 6 s keeps it open past the idle timeout...
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            instance.write_all(&[0x89, 0]).await.unwrap();
            assert_eq!(read_exact(&mut caller, 2).await, [0x89, 0]);
        }
        // ...but not past the lifetime limit
        let expect = close_frame(1001, LIFETIME.0, None);
        assert_eq!(read_exact(&mut caller, expect.len()).await, expect);
        drop((caller, instance));
        task.await.unwrap();

        let (mut caller, caller_side) = duplex(1 << 16);
        let (_instance, instance_side) = duplex(1 << 16);
        let task = tokio::spawn(run(caller_side, instance_side, limits, None));
        let expect = close_frame(1001, IDLE.0, None);
        assert_eq!(read_exact(&mut caller, expect.len()).await, expect);
        drop(caller);
        task.await.unwrap();
    }
}
