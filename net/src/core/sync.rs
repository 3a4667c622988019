//! The session document as a member holds it: the document, one automerge sync state per
//! peer, and the reassembly of messages too large for one control frame. Pure: the member
//! core decides where each part travels.

use std::collections::BTreeMap;

use rand_core::CryptoRngCore;
use thiserror::Error;

use crate::crypto::{DocCipher, DocEnds, ReplayWindow};
use crate::doc::{DocSync, SessionDoc};
use crate::wire::{DocPlace, MemberId, ParticipantId, PeerMessage, MAX_CONTROL_FRAME};

/// Largest plaintext of one document message part (sealed, it fits a control frame with
/// room for its framing).
pub const DOC_PART: usize = MAX_CONTROL_FRAME - 512;
/// Largest document message reassembled from parts; a peer cannot make us hold more.
pub const MAX_DOC_MESSAGE: usize = 64 * 1024 * 1024;
/// Most bytes of unfinished messages held across all peers and paths: a room's worth of
/// members each sending its first sync at once fits many times over, and a crowd of hostile
/// senders cannot make us hold more than this.
pub const MAX_DOC_IN_FLIGHT: usize = 2 * MAX_DOC_MESSAGE;

/// Why a document message was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DocFault {
    /// It did not open under the key it names.
    #[error("session document message did not verify")]
    Forged,
    /// A part out of order, too much in all, or a message automerge refused.
    #[error("session document message refused: {0}")]
    Malformed(String),
    /// A message number already taken (a replay), or too old to tell.
    #[error("session document message {0} was seen before")]
    Replayed(u32),
    /// Our own sync message would need more parts than a message may have.
    #[error("session document message of {0} bytes is too large to send")]
    TooLarge(usize),
}

/// One sealed part of a document sync message.
#[derive(Debug, Clone, Copy)]
pub struct DocPart<'a> {
    /// Whose ephemerals its key is of.
    pub ends: &'a DocEnds,
    /// AEAD nonce.
    pub nonce: &'a [u8; 12],
    /// Ciphertext and tag.
    pub sealed: &'a [u8],
    /// Its message, index and count, as the sender sealed them.
    pub place: DocPlace,
}

impl<'a> DocPart<'a> {
    /// The part a [`PeerMessage::Doc`] carries; `None` for any other message.
    pub fn of(msg: &'a PeerMessage) -> Option<Self> {
        match msg {
            PeerMessage::Doc {
                ends,
                nonce,
                sealed,
                message,
                part,
                parts,
            } => Some(Self {
                ends,
                nonce,
                sealed,
                place: DocPlace {
                    message: *message,
                    part: *part,
                    parts: *parts,
                },
            }),
            _ => None,
        }
    }
}

/// What a received part did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A part of a message still incomplete.
    Partial,
    /// A whole message, which brought nothing new (the peer's sync bookkeeping).
    Unchanged,
    /// A whole message that changed the document.
    Changed,
}

/// A member's copy of the session document and its sync with each peer.
pub struct DocReplica {
    doc: SessionDoc,
    /// By participant, so a peer that reconnects with a new member id is the same peer.
    peers: BTreeMap<ParticipantId, DocSync>,
    /// Parts of a message received so far, per peer and path (true: direct): its number and
    /// bytes.
    partial: BTreeMap<(ParticipantId, bool), (u32, Vec<u8>)>,
    /// Message numbers taken from each peer, so a replayed message is refused. A sender's
    /// numbers to us run on across its reconnections and over all its paths, hence a window
    /// rather than "only upwards" (a message by the relay may land after a later one over a
    /// new direct path), kept for the room's life: a participant id is one session's.
    seen: BTreeMap<ParticipantId, ReplayWindow>,
    /// Our next message number to each peer.
    next_message: BTreeMap<ParticipantId, u32>,
    /// Who we are: what a message to us is sealed for.
    me: ParticipantId,
}

impl DocReplica {
    /// Holds `doc` for member `me`.
    pub fn new(doc: SessionDoc, me: ParticipantId) -> Self {
        Self {
            doc,
            peers: BTreeMap::new(),
            partial: BTreeMap::new(),
            seen: BTreeMap::new(),
            next_message: BTreeMap::new(),
            me,
        }
    }

    /// The document.
    pub fn doc(&mut self) -> &mut SessionDoc {
        &mut self.doc
    }

    /// What `to` lacks of the document, if anything, sealed as from `me` under `key` (named
    /// by `ends`) in as many parts as control frames need.
    pub fn outgoing(
        &mut self,
        me: MemberId,
        to: ParticipantId,
        (key, ends): (&DocCipher, DocEnds),
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Vec<PeerMessage>, DocFault> {
        let Some(msg) = self.peers.entry(to).or_default().generate(&mut self.doc) else {
            return Ok(Vec::new());
        };
        let chunks: Vec<&[u8]> = msg.chunks(DOC_PART).collect();
        let parts = u16::try_from(chunks.len()).map_err(|_| DocFault::TooLarge(msg.len()))?;
        let next = self.next_message.entry(to).or_default();
        let message = *next;
        *next = next.wrapping_add(1);
        Ok(chunks
            .into_iter()
            .enumerate()
            .map(|(part, chunk)| {
                let place = DocPlace {
                    message,
                    part: part as u16,
                    parts,
                };
                let (nonce, sealed) = key.seal(me, &place.context(to), chunk, rng);
                PeerMessage::Doc {
                    ends: ends.clone(),
                    nonce,
                    sealed,
                    message,
                    part: place.part,
                    parts,
                }
            })
            .collect())
    }

    /// A part from member `from` (who is `participant`) on a direct path or the relay, opened
    /// under `key` (the one its `ends` name).
    pub fn receive(
        &mut self,
        from: MemberId,
        participant: ParticipantId,
        direct: bool,
        p: DocPart<'_>,
        key: &DocCipher,
    ) -> Result<Received, DocFault> {
        let plain = key
            .open(from, &p.place.context(self.me), p.nonce, p.sealed)
            .map_err(|_| DocFault::Forged)?;
        let DocPlace {
            message,
            part,
            parts,
        } = p.place;
        let seen = self.seen.entry(participant).or_default();
        seen.check(message)
            .map_err(|_| DocFault::Replayed(message))?;
        let whole = if parts <= 1 {
            plain
        } else {
            let in_flight: usize = self.partial.values().map(|(_, b)| b.len()).sum();
            // Parts come in order on one stream; anything else starts over.
            let (number, buf) = self.partial.entry((participant, direct)).or_default();
            let expected = u16::try_from(buf.len() / DOC_PART).unwrap_or(u16::MAX);
            if part == 0 {
                buf.clear();
                *number = message;
            } else if part != expected || *number != message || !buf.len().is_multiple_of(DOC_PART)
            {
                buf.clear();
                return Err(DocFault::Malformed(format!(
                    "part {part} of message {message} out of order"
                )));
            }
            if buf.len() + plain.len() > MAX_DOC_MESSAGE
                || in_flight + plain.len() > MAX_DOC_IN_FLIGHT
            {
                buf.clear();
                return Err(DocFault::Malformed("message too large".into()));
            }
            buf.extend_from_slice(&plain);
            if part + 1 < parts {
                return Ok(Received::Partial);
            }
            std::mem::take(buf)
        };
        seen.mark(message);
        #[cfg(test)]
        if fault::drops_this() {
            return Ok(Received::Unchanged);
        }
        let before = self.doc.heads();
        self.peers
            .entry(participant)
            .or_default()
            .receive(&mut self.doc, &whole)
            .map_err(|e| DocFault::Malformed(e.to_string()))?;
        Ok(if self.doc.heads() == before {
            Received::Unchanged
        } else {
            Received::Changed
        })
    }

    /// Starts the sync with `participant` afresh: what was in flight to it may be lost.
    pub fn restart(&mut self, participant: ParticipantId) {
        self.peers.remove(&participant);
        self.forget_partial(participant);
    }

    /// Frees what `participant` had half sent (it left, or its path went).
    pub fn forget_partial(&mut self, participant: ParticipantId) {
        self.partial.retain(|(p, _), _| *p != participant);
    }

    /// Starts every sync afresh (we rejoined: the others may have missed our edits).
    pub fn restart_all(&mut self) {
        self.peers.clear();
        self.partial.clear();
    }

    /// Bytes of unfinished messages held now.
    pub fn in_flight(&self) -> usize {
        self.partial.values().map(|(_, b)| b.len()).sum()
    }
}

/// A test-only fault: whole sync messages taken as applied but thrown away, to show the chaos
/// tests catch a broken sync.
#[cfg(test)]
pub(crate) mod fault {
    use std::cell::Cell;

    thread_local! {
        static DROP_EVERY: Cell<u32> = const { Cell::new(0) };
        static SEEN: Cell<u32> = const { Cell::new(0) };
    }

    /// Throws away every `n`-th whole message received on this thread (0: none).
    pub(crate) fn drop_every(n: u32) {
        DROP_EVERY.set(n);
        SEEN.set(0);
    }

    pub(super) fn drops_this() -> bool {
        let n = DROP_EVERY.get();
        if n == 0 {
            return false;
        }
        SEEN.set(SEEN.get() + 1);
        SEEN.get().is_multiple_of(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The pairwise key's derivation is the crypto module's (and the member core's tests');
    // here one key stands for it.
    fn key(k: u8) -> DocCipher {
        DocCipher::danger_from_key([k; 32])
    }

    fn ends() -> DocEnds {
        DocEnds {
            from: crate::crypto::KeyAnnounce {
                member: MemberId(0),
                epoch: 0,
                public: [1; 32],
                mac: [0; 32],
                signature: Vec::new(),
            },
            to_epoch: 0,
            to_public: [2; 32],
        }
    }

    fn replica(me: ParticipantId) -> DocReplica {
        DocReplica::new(SessionDoc::new().unwrap(), me)
    }

    fn send(a: &mut DocReplica, from: MemberId, to: ParticipantId) -> Vec<PeerMessage> {
        a.outgoing(from, to, (&key(3), ends()), &mut rand_core::OsRng)
            .unwrap()
    }

    fn take(
        to: &mut DocReplica,
        from: (MemberId, ParticipantId),
        m: &PeerMessage,
    ) -> Result<Received, DocFault> {
        let p = DocPart::of(m).expect("a document part");
        to.receive(from.0, from.1, false, p, &key(3))
    }

    fn deliver(to: &mut DocReplica, from: (MemberId, ParticipantId), msgs: &[PeerMessage]) {
        for m in msgs {
            let _ = take(to, from, m);
        }
    }

    const A: (MemberId, ParticipantId) = (MemberId(0), ParticipantId(10));
    const B: (MemberId, ParticipantId) = (MemberId(1), ParticipantId(11));

    /// Rounds of sync between two replicas, dropping every message `lose` says to. A lost
    /// message leaves both sides waiting; as the member core does when a path drops, they then
    /// start over. Returns the most parts any message had.
    fn converge(
        a: &mut DocReplica,
        b: &mut DocReplica,
        mut lose: impl FnMut(usize) -> bool,
    ) -> usize {
        let (mut n, mut lost, mut most) = (0, false, 0);
        for _ in 0..100 {
            let to_b = send(a, A.0, B.1);
            let to_a = send(b, B.0, A.1);
            if to_b.is_empty() && to_a.is_empty() {
                if !lost {
                    return most;
                }
                lost = false;
                a.restart(B.1);
                b.restart(A.1);
                continue;
            }
            for (msgs, to, from) in [(to_b, &mut *b, A), (to_a, &mut *a, B)] {
                if msgs.is_empty() {
                    continue;
                }
                n += 1;
                most = most.max(msgs.len());
                if lose(n) {
                    lost = true;
                    continue;
                }
                deliver(to, from, &msgs);
            }
        }
        panic!("no convergence in 100 rounds");
    }

    #[test]
    fn two_replicas_converge_even_when_messages_are_lost() {
        let (mut a, mut b) = (replica(A.1), replica(B.1));
        a.doc().set_tempo(97.0).unwrap();
        b.doc().chart_append("| Am | F |").unwrap();
        let mut rng = crate::sim::DangerSeededRng::new(5);
        converge(&mut a, &mut b, |_| {
            rand_core::RngCore::next_u32(&mut rng).is_multiple_of(4)
        });
        assert_eq!(a.doc().to_json(), b.doc().to_json());
        assert_eq!(b.doc().tempo(), 97.0);
    }

    #[test]
    fn a_document_larger_than_a_control_frame_goes_in_parts_and_out_of_order_parts_are_refused() {
        let (mut a, mut b) = (replica(A.1), replica(B.1));
        // Random text: automerge compresses, so a repetitive chart would fit one frame.
        let mut rng = crate::sim::DangerSeededRng::new(1);
        let long: String = (0..5000)
            .map(|_| format!("{:08x}", rand_core::RngCore::next_u32(&mut rng)))
            .collect();
        a.doc().chart_append(&long).unwrap();
        assert!(converge(&mut a, &mut b, |_| false) > 1, "sent in parts");
        assert_eq!(b.doc().chart(), a.doc().chart());

        // Parts out of order are refused; the same parts in order are taken.
        let mut c = replica(ParticipantId(12));
        let mut msgs = Vec::new();
        for _ in 0..10 {
            let m = send(&mut a, A.0, ParticipantId(12));
            if m.len() > 1 {
                msgs = m;
                break;
            }
            let back = send(&mut c, B.0, A.1);
            deliver(&mut c, A, &m);
            deliver(&mut a, (B.0, ParticipantId(12)), &back);
        }
        assert!(msgs.len() > 1);
        let mut swapped = msgs.clone();
        swapped.swap(0, 1);
        let results: Vec<_> = swapped.iter().map(|m| take(&mut c, A, m)).collect();
        assert!(results.iter().any(Result::is_err), "{results:?}");
        assert!(!results.contains(&Ok(Received::Changed)));
    }

    #[test]
    fn a_part_sealed_under_another_key_or_sender_is_refused() {
        let (mut a, mut b) = (replica(A.1), replica(B.1));
        a.doc().set_tempo(120.0).unwrap();
        let msgs = send(&mut a, A.0, B.1);
        let p = DocPart::of(&msgs[0]).unwrap();
        assert_eq!(
            b.receive(A.0, A.1, false, p, &key(4)),
            Err(DocFault::Forged)
        );
        assert_eq!(
            b.receive(MemberId(5), A.1, false, p, &key(3)),
            Err(DocFault::Forged),
            "the sender id is bound into the seal"
        );
        assert_eq!(
            b.receive(A.0, A.1, false, p, &key(3)),
            Ok(Received::Unchanged),
            "a first sync message only says what it has"
        );
    }

    /// A message for `to` from A with the chart far larger than one part.
    fn message_in_parts(a: &mut DocReplica, to: ParticipantId) -> Vec<PeerMessage> {
        let mut rng = crate::sim::DangerSeededRng::new(1);
        let long: String = (0..5000)
            .map(|_| format!("{:08x}", rand_core::RngCore::next_u32(&mut rng)))
            .collect();
        a.doc().chart_append(&long).unwrap();
        // The first messages to a peer only say what each side has; answer them until the
        // changes themselves go.
        let mut peer = replica(to);
        for _ in 0..10 {
            let m = send(a, A.0, to);
            if m.len() > 1 {
                return m;
            }
            deliver(&mut peer, A, &m);
            let back = send(&mut peer, B.0, A.1);
            deliver(a, (B.0, to), &back);
        }
        panic!("the chart never went in parts")
    }

    fn relabel(m: &PeerMessage, f: impl FnOnce(&mut u32, &mut u16)) -> PeerMessage {
        let mut m = m.clone();
        if let PeerMessage::Doc { message, part, .. } = &mut m {
            f(message, part);
        }
        m
    }

    /// What a relay holding every sealed part can try: replay a message, move a part to
    /// another message or place, hand a message to a member it was not for.
    #[test]
    fn replayed_moved_and_redirected_document_messages_are_refused() {
        let mut a = replica(A.1);
        let msgs = message_in_parts(&mut a, B.1);
        assert!(msgs.len() > 1, "in parts");
        let mut b = replica(B.1);
        let take = |b: &mut DocReplica, m: &PeerMessage| take(b, A, m);

        // A part moved to another place or message does not open.
        let moved = relabel(&msgs[1], |_, part| *part = 2);
        assert_eq!(take(&mut b, &msgs[0]), Ok(Received::Partial));
        assert_eq!(take(&mut b, &moved), Err(DocFault::Forged));
        let renumbered = relabel(&msgs[0], |message, _| *message += 1);
        assert_eq!(take(&mut b, &renumbered), Err(DocFault::Forged));

        // Whole, in order: taken once.
        let results: Vec<_> = msgs.iter().map(|m| take(&mut b, m)).collect();
        assert_eq!(results.last(), Some(&Ok(Received::Changed)), "{results:?}");
        assert_eq!(b.doc().chart(), a.doc().chart());
        let number = match msgs[0] {
            PeerMessage::Doc { message, .. } => message,
            _ => unreachable!(),
        };
        assert_eq!(take(&mut b, &msgs[0]), Err(DocFault::Replayed(number)));

        // Sealed for B, handed to C: refused.
        let mut c = replica(ParticipantId(12));
        assert_eq!(take(&mut c, &msgs[0]), Err(DocFault::Forged));

        // Nor does a sync started over (a path lost) make it new.
        b.restart(A.1);
        assert_eq!(take(&mut b, &msgs[0]), Err(DocFault::Replayed(number)));
    }

    /// Senders that start large messages and never finish them: what we hold stays under one
    /// bound across all of them, and a sender's share is freed when it leaves.
    #[test]
    fn unfinished_messages_are_bounded_across_senders_and_freed_on_leave() {
        let cipher = key(3);
        let mut b = replica(B.1);
        let ends = ends();
        let chunk = vec![7u8; DOC_PART];
        let mut refused = 0;
        // Each sender stops just short of the largest message, so no per-message bound cuts
        // it off: only the bound across senders can.
        let most = (MAX_DOC_MESSAGE / DOC_PART) as u16;
        for sender in 0..4u16 {
            let from = (
                MemberId(sender + 10),
                ParticipantId(100 + u64::from(sender)),
            );
            for part in 0..most {
                let place = DocPlace {
                    message: 0,
                    part,
                    parts: u16::MAX,
                };
                let (nonce, sealed) =
                    cipher.seal(from.0, &place.context(B.1), &chunk, &mut rand_core::OsRng);
                let p = DocPart {
                    ends: &ends,
                    nonce: &nonce,
                    sealed: &sealed,
                    place,
                };
                match b.receive(from.0, from.1, false, p, &cipher) {
                    Ok(Received::Partial) => {}
                    Err(DocFault::Malformed(_)) => {
                        refused += 1;
                        break;
                    }
                    other => panic!("{other:?}"),
                }
                assert!(b.in_flight() <= MAX_DOC_IN_FLIGHT);
            }
        }
        println!(
            "4 senders of endless messages: {} MiB held, {refused} cut off",
            b.in_flight() >> 20
        );
        assert_eq!(refused, 2, "the senders past the bound were cut off");
        for sender in 0..4u16 {
            b.forget_partial(ParticipantId(100 + u64::from(sender)));
        }
        assert_eq!(b.in_flight(), 0, "freed when they left");
    }
}
