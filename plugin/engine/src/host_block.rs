//! A host's buffers for one block, as a plugin host lays them out: the main stereo channels
//! and the auxiliary stereo buses, for tests and benchmarks that drive the engine as a host.

use crate::{Engine, EngineParams};

/// Main channels then each bus's two, `frames` long.
pub struct HostBlock {
    bufs: Vec<Vec<f32>>,
}

impl HostBlock {
    /// Stereo main channels and `buses` stereo auxiliary outputs of `frames` each.
    pub fn new(frames: usize, buses: usize) -> Self {
        Self {
            bufs: vec![vec![0.0; frames]; 2 * (buses + 1)],
        }
    }

    /// Sets the input (both main channels) and clears the outputs the host hands over.
    pub fn input(&mut self, left: &[f32], right: &[f32]) {
        let [l, r, aux @ ..] = &mut self.bufs[..] else {
            return;
        };
        l.iter_mut().zip(left).for_each(|(d, s)| *d = *s);
        r.iter_mut().zip(right).for_each(|(d, s)| *d = *s);
        // Hosts hand over whatever the buffers held: the engine must write every sample.
        aux.iter_mut().for_each(|b| b.fill(0.3));
    }

    /// One block through `engine`, every bus connected.
    pub fn process(&mut self, engine: &mut Engine, params: &EngineParams) {
        let (main, aux) = self.bufs.split_at_mut(2);
        let mut main: Vec<&mut [f32]> = main.iter_mut().map(|b| &mut b[..]).collect();
        let mut aux_ch: Vec<Vec<&mut [f32]>> = aux
            .chunks_mut(2)
            .map(|pair| pair.iter_mut().map(|b| &mut b[..]).collect())
            .collect();
        let mut aux: Vec<Option<&mut [&mut [f32]]>> =
            aux_ch.iter_mut().map(|c| Some(&mut c[..])).collect();
        engine.process_with_aux(&mut main, &mut aux, params);
    }

    /// The main output's left channel.
    pub fn main(&self) -> &[f32] {
        &self.bufs[0]
    }

    /// Auxiliary bus `bus`'s left channel (1 first).
    pub fn aux(&self, bus: usize) -> &[f32] {
        &self.bufs[2 * bus]
    }
}
