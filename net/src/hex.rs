//! Lowercase hex for the fixed-size keys and fingerprints kept in text files and invites.

/// `bytes` as lowercase hex.
pub(crate) fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fills `out` from exactly `2 * out.len()` hex digits; `false` (and `out` partly written)
/// for anything else. The caller's buffer, so a secret is never copied.
pub(crate) fn decode_into(text: &[u8], out: &mut [u8]) -> bool {
    if text.len() != 2 * out.len() {
        return false;
    }
    for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let Some(b) = std::str::from_utf8(pair)
            .ok()
            .and_then(|p| u8::from_str_radix(p, 16).ok())
        else {
            return false;
        };
        *o = b;
    }
    true
}
