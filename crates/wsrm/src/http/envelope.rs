//! [`Envelope`]: a request body in pieces, sent with one vectored write and never copied
//! together.

use std::io::IoSlice;

use bytes::{Buf, Bytes};
use wsrm_wire::{Digits, SequencePieces};

/// The number of pieces: head, number, tail, body, close.
const PIECES: u8 = 5;

/// An outgoing request body: one buffer, or a sequence message as the pieces of a
/// [`wsrm_wire::SequenceTemplate`] (the template's shared head, the message number written in
/// place, the shared tail, the caller's body and the envelope's end).
///
/// As a [`Buf`] it gives every piece to a vectored write ([`Buf::chunks_vectored`]), so the
/// client's connection sends the envelope without a buffer of its size being allocated and
/// written per message (hyper queues the body's buffers when the connection writes vectored).
///
/// Its state is boxed: hyper moves the request (and so its body) several times per exchange,
/// and a pointer moves cheaper than the five pieces.
#[derive(Debug, Clone)]
pub(crate) struct Envelope(Box<Pieces>);

#[derive(Debug, Clone)]
struct Pieces {
    head: Bytes,
    /// The message number's decimal digits (`None`: one buffer, no number).
    digits: Option<Digits>,
    tail: Bytes,
    body: Bytes,
    close: &'static [u8],
    /// The piece being read, and the offset in it: always a byte of a piece while
    /// `remaining > 0`.
    piece: u8,
    offset: usize,
    remaining: usize,
}

impl Envelope {
    /// A sequence message from its pieces.
    pub(crate) fn sequence(p: SequencePieces) -> Self {
        Envelope(Box::new(Pieces::sequence(p)))
    }
}

impl Pieces {
    fn sequence(p: SequencePieces) -> Self {
        let digits = p.digits();
        let mut e = Pieces {
            remaining: p.head.len()
                + digits.as_bytes().len()
                + p.tail.len()
                + p.body.len()
                + SequencePieces::CLOSE.len(),
            head: p.head,
            digits: Some(digits),
            tail: p.tail,
            body: p.body,
            close: SequencePieces::CLOSE,
            piece: 0,
            offset: 0,
        };
        e.skip_empty();
        e
    }

    /// The piece `i` (empty past the last).
    fn get(&self, i: u8) -> &[u8] {
        match i {
            0 => &self.head,
            1 => self.digits.as_ref().map_or(&[], Digits::as_bytes),
            2 => &self.tail,
            3 => &self.body,
            4 => self.close,
            _ => &[],
        }
    }

    /// Moves past empty pieces (at offset 0), so that `piece` holds a byte unless all is read.
    fn skip_empty(&mut self) {
        while self.piece < PIECES && self.offset >= self.get(self.piece).len() {
            self.piece += 1;
            self.offset = 0;
        }
    }
}

impl From<Bytes> for Envelope {
    fn from(b: Bytes) -> Self {
        Envelope(Box::new(Pieces {
            remaining: b.len(),
            head: b,
            digits: None,
            tail: Bytes::new(),
            body: Bytes::new(),
            close: &[],
            piece: 0,
            offset: 0,
        }))
    }
}

impl Buf for Envelope {
    fn remaining(&self) -> usize {
        self.0.remaining()
    }

    fn chunk(&self) -> &[u8] {
        self.0.chunk()
    }

    fn advance(&mut self, cnt: usize) {
        self.0.advance(cnt)
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        self.0.chunks_vectored(dst)
    }
}

impl Buf for Pieces {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.get(self.piece).get(self.offset..).unwrap_or_default()
    }

    fn advance(&mut self, cnt: usize) {
        // more than remains is read as all of it (the trait leaves it to the implementation)
        let mut cnt = cnt.min(self.remaining);
        self.remaining -= cnt;
        while cnt > 0 && self.piece < PIECES {
            let left = self.get(self.piece).len().saturating_sub(self.offset);
            if cnt < left {
                self.offset += cnt;
                cnt = 0;
            } else {
                cnt -= left;
                self.piece += 1;
                self.offset = 0;
            }
        }
        self.skip_empty();
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let mut offset = self.offset;
        for i in self.piece..PIECES {
            let s = self.get(i).get(offset..).unwrap_or_default();
            offset = 0;
            if s.is_empty() {
                continue;
            }
            match dst.get_mut(n) {
                Some(slot) => *slot = IoSlice::new(s),
                None => break,
            }
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pieces(head: &[u8], number: u64, tail: &[u8], body: &[u8]) -> SequencePieces {
        SequencePieces {
            head: Bytes::copy_from_slice(head),
            number,
            tail: Bytes::copy_from_slice(tail),
            body: Bytes::copy_from_slice(body),
        }
    }

    fn joined(p: &SequencePieces) -> Vec<u8> {
        let mut v = p.head.to_vec();
        v.extend_from_slice(p.number.to_string().as_bytes());
        v.extend_from_slice(&p.tail);
        v.extend_from_slice(&p.body);
        v.extend_from_slice(SequencePieces::CLOSE);
        v
    }

    /// Reads `e` to its end: each step looks at what `look` gives (never empty before the
    /// end) and advances by the next of `steps` (cycled), at most by what it saw.
    fn read_all(mut e: Envelope, steps: &[usize], look: impl Fn(&Envelope) -> Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while e.has_remaining() {
            let seen = look(&e);
            assert!(!seen.is_empty(), "nothing to read before the end");
            let step = steps
                .get(i % steps.len().max(1))
                .copied()
                .unwrap_or(usize::MAX);
            let take = step.clamp(1, seen.len());
            out.extend_from_slice(&seen[..take]);
            e.advance(take);
            i += 1;
        }
        assert!(e.chunk().is_empty());
        out
    }

    /// [`read_all`] by `chunk`.
    fn read_by_chunks(e: Envelope, steps: &[usize]) -> Vec<u8> {
        read_all(e, steps, |e| e.chunk().to_vec())
    }

    /// [`read_all`] by `chunks_vectored` into `slots` slices (none of them empty).
    fn read_vectored(e: Envelope, slots: usize, steps: &[usize]) -> Vec<u8> {
        read_all(e, steps, |e| {
            let mut dst = vec![IoSlice::new(&[]); slots];
            let n = e.chunks_vectored(&mut dst);
            assert!(n >= 1 && n <= slots);
            assert!(dst[..n].iter().all(|s| !s.is_empty()), "an empty slice");
            dst[..n].iter().flat_map(|s| s.iter().copied()).collect()
        })
    }

    proptest! {
        #[test]
        fn a_sequence_envelope_reads_as_its_joined_bytes(
            head in proptest::collection::vec(any::<u8>(), 0..40),
            number in prop_oneof![Just(0u64), Just(1), Just(9), Just(10), Just(u64::MAX), any::<u64>()],
            tail in proptest::collection::vec(any::<u8>(), 0..40),
            body in proptest::collection::vec(any::<u8>(), 0..40),
            steps in proptest::collection::vec(1usize..50, 1..6),
            slots in 1usize..7,
        ) {
            let p = pieces(&head, number, &tail, &body);
            let want = joined(&p);
            let e = Envelope::sequence(p);
            prop_assert_eq!(e.remaining(), want.len());
            prop_assert_eq!(read_by_chunks(e.clone(), &steps), want.clone());
            prop_assert_eq!(read_vectored(e.clone(), slots, &steps), want.clone());
            // copy_to_bytes (what a flattening writer may use) gives the same
            let mut e2 = e;
            let all = e2.copy_to_bytes(want.len());
            prop_assert_eq!(&all[..], &want[..]);
            prop_assert!(!e2.has_remaining());
        }

        #[test]
        fn one_buffer_reads_as_itself(
            b in proptest::collection::vec(any::<u8>(), 0..100),
            steps in proptest::collection::vec(1usize..50, 1..6),
        ) {
            let e = Envelope::from(Bytes::from(b.clone()));
            prop_assert_eq!(e.remaining(), b.len());
            prop_assert_eq!(read_by_chunks(e.clone(), &steps), b.clone());
            prop_assert_eq!(read_vectored(e, 3, &steps), b);
        }
    }

    #[test]
    fn every_piece_is_one_slice() {
        let e = Envelope::sequence(pieces(b"<h>", 42, b"<t>", b"<b/>"));
        let mut dst = [IoSlice::new(&[]); 8];
        let n = e.chunks_vectored(&mut dst);
        let got: Vec<&[u8]> = dst[..n].iter().map(|s| &s[..]).collect();
        assert_eq!(
            got,
            vec![&b"<h>"[..], b"42", b"<t>", b"<b/>", SequencePieces::CLOSE]
        );
        // no slot: nothing written
        assert_eq!(e.chunks_vectored(&mut []), 0);
    }

    #[test]
    fn advancing_past_the_end_reads_everything() {
        let mut e = Envelope::sequence(pieces(b"ab", 7, b"cd", b"ef"));
        e.advance(usize::MAX);
        assert_eq!(e.remaining(), 0);
        assert!(e.chunk().is_empty());
        let mut dst = [IoSlice::new(&[]); 2];
        assert_eq!(e.chunks_vectored(&mut dst), 0);
    }
}
