//! Echoel Jam without a DAW: the same plugin and editor on JACK, ALSA or the system's default
//! audio device (`--help` lists the backends, devices, rate and block size).

use echoel_plugin::EchoelJam;
use nice_plug::prelude::nice_export_standalone;

fn main() {
    if !nice_export_standalone::<EchoelJam>() {
        std::process::exit(1);
    }
}
