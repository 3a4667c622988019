"""The release VST3 bundle in a real host (pedalboard, JUCE's VST3 hosting).

Runs at 48 and 44.1 kHz with 64- and 1024-frame blocks: unity settings pass the input through
unchanged, and in loopback mode the decoded signal comes back (correlation > 0.9); the path
latency is printed.
"""

import os
from pathlib import Path

import numpy as np
import pedalboard
import pytest

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = Path(os.environ.get("ECHOEL_VST3", ROOT / "target" / "bundled" / "Echoel Jam.vst3"))
CASES = [(48_000, 64), (48_000, 1024), (44_100, 64), (44_100, 1024)]


def sweep(rate: int, seconds: float) -> np.ndarray:
    """A non-repeating sweep with harmonics: one unambiguous correlation peak."""
    t = np.arange(int(rate * seconds)) / rate
    f0, f1, period = 110.0, 2640.0, 1.7
    k = np.log(f1 / f0) / period
    phase = 2 * np.pi * f0 * (np.exp(k * (t % period)) - 1) / k
    mono = 0.28 * (np.sin(phase) + 0.4 * np.sin(2 * phase) + 0.2 * np.sin(3 * phase))
    return np.stack([mono, mono]).astype(np.float32)


def best_lag(reference: np.ndarray, received: np.ndarray, max_lag: int):
    """Lag (samples) and normalised correlation of `received` against `reference`."""
    n = len(reference)
    size = 1 << int(np.ceil(np.log2(2 * (n + max_lag))))
    xc = np.fft.irfft(np.fft.rfft(received[: n + max_lag], size) * np.conj(np.fft.rfft(reference, size)), size)
    energy = np.concatenate([[0.0], np.cumsum(received[: n + max_lag].astype(np.float64) ** 2)])
    window = energy[n : n + max_lag + 1] - energy[: max_lag + 1]
    corr = xc[: max_lag + 1] / np.sqrt(np.maximum(window * np.sum(reference.astype(np.float64) ** 2), 1e-30))
    lag = int(np.argmax(corr))
    return lag, float(corr[lag])


@pytest.fixture(scope="module")
def plugin_path() -> str:
    assert BUNDLE.exists(), f"{BUNDLE} is missing: run `cargo xtask bundle echoel-plugin --release`"
    return str(BUNDLE)


def load(path: str):
    plugin = pedalboard.load_plugin(path)
    assert plugin.name == "Echoel Jam"
    return plugin


@pytest.mark.parametrize("rate,block", CASES)
def test_unity_settings_pass_the_input_through(plugin_path, rate, block):
    plugin = load(plugin_path)
    audio = sweep(rate, 1.0)
    out = plugin.process(audio, rate, buffer_size=block, reset=True)
    assert out.shape == audio.shape
    assert np.max(np.abs(out - audio)) < 1e-6


@pytest.mark.parametrize("rate,block", CASES)
def test_loopback_brings_the_decoded_signal_back(plugin_path, rate, block):
    plugin = load(plugin_path)
    plugin.loopback = True
    # Fader bottom is silence: the output is then only the coded path.
    plugin.parameters["monitor_level_db"].raw_value = 0.0
    audio = sweep(rate, 2.5)
    out = plugin.process(audio, rate, buffer_size=block, reset=True)
    # Eight windows over the second after the first half, each aligned on its own: the jitter
    # buffer may slew its delay (at most 1 ms a second) meanwhile, which one long window would
    # count as noise. The median window by correlation stands for the path.
    start, width = rate // 2, rate // 8
    found = sorted(
        best_lag(audio[0, at : at + width], out[0, at:], int(0.25 * rate))[::-1]
        for at in range(start, start + 8 * width, width)
    )
    corr, lag = found[len(found) // 2]
    print(f"\nVST3 in pedalboard at {rate} Hz, block {block}: loopback lag {1000 * lag / rate:.2f} ms, correlation {corr:.4f}")
    assert corr > 0.9
    assert lag > 0, "the coded path cannot be faster than the dry one"


def test_mono_layout_processes_audio(plugin_path):
    plugin = load(plugin_path)
    audio = sweep(48_000, 0.5)[:1]
    out = plugin.process(audio, 48_000, buffer_size=256, reset=True)
    assert out.shape == audio.shape
    assert np.max(np.abs(out - audio)) < 1e-6
