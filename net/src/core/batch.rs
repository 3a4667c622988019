//! Micro-batching of forwarded datagrams, per recipient: a pure function of arrival times.
//!
//! A recipient that received a datagram less than [`BATCH_WINDOW`] ago gets the next ones held
//! until the oldest held is that old, then all at once: they go as bundles that fill the
//! path's datagram size, which saves a packet's crypto, header and system call per datagram.
//! A recipient idle for longer is sent to at once, so small rooms see no added delay.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::wire::{bundle, BUNDLE_ITEM_OVERHEAD};

/// How long a datagram may be held for a busy recipient.
pub const BATCH_WINDOW: Duration = Duration::from_micros(400);
/// Most datagrams held for one recipient (a full packet's worth of low-delay frames).
pub const MAX_BATCH: usize = 16;

/// One recipient's held datagrams.
#[derive(Debug, Default)]
pub struct Batcher {
    held: Vec<Bytes>,
    oldest: Option<Instant>,
    last_arrival: Option<Instant>,
}

impl Batcher {
    /// Holds `datagram`; true when what is held is due now (see the module docs).
    pub fn push(&mut self, now: Instant, datagram: Bytes) -> bool {
        let busy = self
            .last_arrival
            .is_some_and(|t| now.saturating_duration_since(t) < BATCH_WINDOW);
        self.last_arrival = Some(now);
        self.held.push(datagram);
        let oldest = *self.oldest.get_or_insert(now);
        !busy
            || now.saturating_duration_since(oldest) >= BATCH_WINDOW
            || self.held.len() >= MAX_BATCH
    }

    /// When the held datagrams are due, if any are held.
    pub fn deadline(&self) -> Option<Instant> {
        self.oldest.map(|t| t + BATCH_WINDOW)
    }

    /// Whether what is held is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| now >= d)
    }

    /// Takes everything held.
    pub fn take(&mut self) -> Vec<Bytes> {
        self.oldest = None;
        std::mem::take(&mut self.held)
    }
}

/// Groups `items` into what goes on the path: a single item as is, several as bundles no
/// larger than `max_datagram`; an item too large to bundle goes alone. Each entry is the
/// datagram and how many items it carries.
pub fn bundles(items: Vec<Bytes>, max_datagram: usize) -> Vec<(Bytes, usize)> {
    if items.len() <= 1 {
        return items.into_iter().map(|d| (d, 1)).collect();
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start < items.len() {
        let mut size = 1;
        let mut end = start;
        while end < items.len() && size + BUNDLE_ITEM_OVERHEAD + items[end].len() <= max_datagram {
            size += BUNDLE_ITEM_OVERHEAD + items[end].len();
            end += 1;
        }
        match end - start {
            0 => {
                out.push((items[start].clone(), 1));
                start += 1;
            }
            1 => {
                out.push((items[start].clone(), 1));
                start = end;
            }
            n => {
                let mut buf = Vec::with_capacity(size);
                bundle(items[start..end].iter().map(|b| &b[..]), &mut buf);
                out.push((Bytes::from(buf), n));
                start = end;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode_sender, forwarded_items, MemberId};

    fn item(sender: u16, len: usize) -> Bytes {
        let mut v = Vec::new();
        encode_sender(MemberId(sender), &mut v);
        v.extend_from_slice(&[0x10, 0, 0, 1]);
        v.resize(len, 0xaa);
        Bytes::from(v)
    }

    #[test]
    fn an_idle_recipient_is_sent_to_at_once_a_busy_one_in_batches() {
        let t0 = Instant::now();
        let mut b = Batcher::default();
        assert!(b.push(t0, item(1, 60)), "idle: at once");
        assert_eq!(b.take().len(), 1);
        assert_eq!(b.deadline(), None);
        let t1 = t0 + Duration::from_micros(100);
        assert!(!b.push(t1, item(2, 60)), "busy: held");
        assert_eq!(b.deadline(), Some(t1 + BATCH_WINDOW));
        assert!(!b.due(t1 + Duration::from_micros(399)));
        assert!(!b.push(t1 + Duration::from_micros(200), item(3, 60)));
        assert!(b.due(t1 + BATCH_WINDOW));
        assert!(b.push(t1 + BATCH_WINDOW, item(4, 60)), "the window is full");
        assert_eq!(b.take().len(), 3);
    }

    #[test]
    fn a_full_batch_goes_without_waiting() {
        let t0 = Instant::now();
        let mut b = Batcher::default();
        b.push(t0, item(1, 60));
        b.take();
        let due: Vec<bool> = (0..MAX_BATCH).map(|_| b.push(t0, item(1, 60))).collect();
        assert_eq!(due.iter().filter(|d| **d).count(), 1);
        assert!(due[MAX_BATCH - 1]);
    }

    #[test]
    fn bundles_fill_the_datagram_size_and_keep_every_item() {
        let items: Vec<Bytes> = (0..10).map(|i| item(i * 40, 200)).collect();
        let out = bundles(items.clone(), 1200);
        assert_eq!(out.iter().map(|(_, n)| n).sum::<usize>(), 10);
        assert!(out.iter().all(|(d, _)| d.len() <= 1200));
        assert_eq!(out.len(), 2, "five 202-byte items per 1200-byte bundle");
        let parsed: Vec<Vec<u8>> = out
            .iter()
            .flat_map(|(d, _)| forwarded_items(d).map(|f| f.unwrap().datagram.to_vec()))
            .collect();
        let sent: Vec<Vec<u8>> = items
            .iter()
            .map(|i| {
                forwarded_items(i)
                    .next()
                    .unwrap()
                    .unwrap()
                    .datagram
                    .to_vec()
            })
            .collect();
        assert_eq!(parsed, sent);
        let huge = bundles(vec![item(1, 1500), item(2, 100)], 1200);
        assert_eq!(huge.len(), 2);
        assert_eq!(huge[0].0.len(), 1500, "too large to bundle: alone");
    }
}
