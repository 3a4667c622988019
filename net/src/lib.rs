//! Echoel Jam's network side. The wire format, end-to-end crypto, the sans-IO room protocol,
//! the QUIC transport and the relay land here (see DESIGN.md, "Network" and "Security"); the
//! audio engine reaches it only through `echoel_engine::NetworkLink`'s rings.
