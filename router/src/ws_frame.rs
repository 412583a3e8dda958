//! WebSocket frame boundaries in one direction of a tunnelled connection
//! (RFC 6455 §5.2). The router does not decode messages; it only follows
//! frame headers so that a Close frame it adds itself (limits, redeploys)
//! goes in between two frames, never inside one. Control frames may come
//! between the fragments of a message (§5.4), so any frame boundary will do.
//! The lowest layer: it imports nothing of the router.

/// The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask key.
const MAX_HEADER: usize = 14;
const OPCODE_CLOSE: u8 = 0x8;

/// Follows one direction's byte stream frame by frame. Bytes are fed in the
/// order they pass; a header may be cut across any number of reads.
#[derive(Debug, Default)]
pub struct FrameScanner {
    head: [u8; MAX_HEADER],
    /// Header bytes of the current frame seen so far (0: at a boundary, or in
    /// the payload when `payload_left` > 0).
    have: usize,
    payload_left: u64,
    in_payload: bool,
    close_seen: bool,
}

impl FrameScanner {
    /// No frame is partly through: a new frame may be written here.
    pub fn at_boundary(&self) -> bool {
        !self.in_payload && self.have == 0
    }

    /// This side has sent a Close frame (its closing handshake has begun).
    pub fn close_seen(&self) -> bool {
        self.close_seen
    }

    /// Follows `data` and returns how many of its bytes were taken: all of
    /// them, or with `stop_at_boundary` only those up to the next boundary
    /// (none when already at one).
    pub fn advance(&mut self, data: &[u8], stop_at_boundary: bool) -> usize {
        let mut used = 0;
        while used < data.len() {
            if stop_at_boundary && self.at_boundary() {
                break;
            }
            if self.in_payload {
                let rest = (data.len() - used) as u64;
                let take = self.payload_left.min(rest);
                used += take as usize;
                self.payload_left -= take;
                if self.payload_left == 0 {
                    self.in_payload = false;
                }
            } else {
                self.head[self.have] = data[used];
                self.have += 1;
                used += 1;
                if self.have == header_len(&self.head[..self.have]) {
                    self.header_done();
                }
            }
        }
        used
    }

    fn header_done(&mut self) {
        let h = &self.head[..self.have];
        if h[0] & 0x0F == OPCODE_CLOSE {
            self.close_seen = true;
        }
        self.payload_left = payload_len(h);
        self.have = 0;
        self.in_payload = self.payload_left > 0;
    }
}

/// The full header length once enough of it is known (a value larger than
/// `seen.len()` while more is needed).
fn header_len(seen: &[u8]) -> usize {
    if seen.len() < 2 {
        return 2;
    }
    let ext = match seen[1] & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if seen[1] & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

fn payload_len(h: &[u8]) -> u64 {
    match h[1] & 0x7F {
        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[2..10]);
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    }
}

/// A Close frame with `code` and `reason` (cut to fit a control frame's 125
/// bytes). Frames to a server must be masked (`mask`), frames to a client not.
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut reason = reason.as_bytes();
    reason = &reason[..reason.len().min(123)];
    let len = 2 + reason.len();
    let mut out = Vec::with_capacity(6 + len);
    out.push(0x80 | OPCODE_CLOSE);
    // `len` ≤ 125: it fits the 7-bit length.
    out.push(len as u8 | if mask.is_some() { 0x80 } else { 0 });
    let mut payload = Vec::with_capacity(len);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason);
    if let Some(key) = mask {
        out.extend_from_slice(&key);
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    out.extend_from_slice(&payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as a peer sends it: `fin`, `opcode`, optional mask, payload.
    fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(n as u8 | m),
            n if n <= 0xFFFF => {
                out.push(126 | m);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127 | m);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if let Some(k) = mask {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        out
    }

    /// Frames of every header shape, back to back.
    fn stream() -> (Vec<u8>, Vec<usize>) {
        let frames = [
            frame(0x1, b"hi", None),
            frame(0x2, &[7u8; 300], Some([1, 2, 3, 4])),
            frame(0x1, b"", Some([9, 9, 9, 9])),
            frame(0x2, &vec![5u8; 70_000], None),
            frame(0x9, b"ping", None),
        ];
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for f in frames {
            bytes.extend_from_slice(&f);
            ends.push(bytes.len());
        }
        (bytes, ends)
    }

    #[test]
    fn boundaries_are_found_whatever_the_read_sizes() {
        let (bytes, ends) = stream();
        for chunk in [1, 2, 3, 5, 13, 14, 4096, bytes.len()] {
            let mut s = FrameScanner::default();
            let mut pos = 0;
            for c in bytes.chunks(chunk) {
                assert_eq!(s.advance(c, false), c.len());
                pos += c.len();
                assert_eq!(
                    s.at_boundary(),
                    ends.contains(&pos),
                    "chunks of {chunk}, at byte {pos}"
                );
            }
            assert!(s.at_boundary());
            assert!(!s.close_seen());
        }
    }

    #[test]
    fn a_header_cut_across_reads_is_followed() {
        let (bytes, ends) = stream();
        // the 70,000-byte frame: 2 + 8 header bytes, fed 1, then 4, then 5 bytes
        let start = ends[2];
        let mut s = FrameScanner::default();
        assert_eq!(s.advance(&bytes[..start], false), start);
        assert!(s.at_boundary());
        for (a, b) in [(0, 1), (1, 5), (5, 10)] {
            s.advance(&bytes[start + a..start + b], false);
            assert!(!s.at_boundary(), "inside the header after {b} bytes");
        }
        // the payload, stopping at the boundary even when more follows
        let rest = &bytes[start + 10..];
        assert_eq!(s.advance(rest, true), 70_000);
        assert!(s.at_boundary());
        assert_eq!(s.advance(&rest[70_000..], true), 0, "already at one");
    }

    #[test]
    fn stopping_at_a_boundary_takes_only_the_current_frame() {
        let (bytes, ends) = stream();
        let mut s = FrameScanner::default();
        s.advance(&bytes[..ends[0] + 3], false);
        assert_eq!(
            s.advance(&bytes[ends[0] + 3..], true),
            ends[1] - ends[0] - 3
        );
        assert!(s.at_boundary());
    }

    #[test]
    fn a_close_frame_is_noticed_and_built_frames_parse() {
        let mut s = FrameScanner::default();
        let ours = close_frame(1001, "idle timeout", None);
        assert_eq!(ours, frame(0x8, b"\x03\xe9idle timeout", None));
        assert_eq!(s.advance(&ours, false), ours.len());
        assert!(s.at_boundary() && s.close_seen());

        let key = [0xA1, 0xB2, 0xC3, 0xD4];
        let masked = close_frame(1000, "", Some(key));
        assert_eq!(masked, frame(0x8, &1000u16.to_be_bytes(), Some(key)));
        let mut s = FrameScanner::default();
        s.advance(&masked[..3], false);
        assert!(!s.close_seen(), "not before its header is complete");
        s.advance(&masked[3..], false);
        assert!(s.at_boundary() && s.close_seen());

        let long = close_frame(1001, &"x".repeat(500), None);
        assert_eq!(
            long.len(),
            2 + 125,
            "a control frame holds at most 125 bytes"
        );
    }
}
