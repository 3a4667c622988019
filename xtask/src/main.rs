//! `cargo xtask`: bundling (nice-plug-xtask) plus `install`, which copies the bundles into the
//! user's standard plugin folders so any CLAP or VST3 host finds them.

use std::path::{Path, PathBuf};

use nice_plug_xtask::Result;

const USAGE: &str = "Usage:
  cargo xtask bundle echoel-plugin [--release]   build target/bundled/Echoel Jam.{clap,vst3}
  cargo xtask install [--clap-dir DIR] [--vst3-dir DIR]
                                                 copy the bundles to the user's plugin folders";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("install") => install(&args[1..]),
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            // `cargo run` describes our own package to us (CARGO_MANIFEST_DIR, CARGO_PKG_NAME…),
            // and the cargo we start would pass that on to build scripts and rustc (ring's
            // build script reruns on them): the bundle would then differ from a plain `cargo
            // build --release` and each would rebuild the other's crates.
            nice_plug_xtask::chdir_workspace_root()?;
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy().into_owned();
                let ours = [
                    "CARGO_MANIFEST_",
                    "CARGO_PKG_",
                    "CARGO_CRATE_",
                    "CARGO_BIN_",
                ]
                .iter()
                .any(|p| name.starts_with(p));
                if ours || name == "CARGO_PRIMARY_PACKAGE" {
                    std::env::remove_var(&name);
                }
            }
            nice_plug_xtask::main_with_args("cargo xtask", args)
        }
    }
}

/// The standard per-user plugin folders (CLAP and VST3 specs).
fn default_dirs() -> Result<(PathBuf, PathBuf)> {
    if cfg!(windows) {
        let common = std::env::var_os("COMMONPROGRAMFILES")
            .map(PathBuf::from)
            .ok_or_else(|| anyhow_msg("COMMONPROGRAMFILES is not set"))?;
        return Ok((common.join("CLAP"), common.join("VST3")));
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or_else(|| anyhow_msg("HOME is not set; pass --clap-dir and --vst3-dir"))?;
    if cfg!(target_os = "macos") {
        let base = home.join("Library/Audio/Plug-Ins");
        Ok((base.join("CLAP"), base.join("VST3")))
    } else {
        Ok((home.join(".clap"), home.join(".vst3")))
    }
}

fn anyhow_msg(msg: &str) -> anyhow::Error {
    anyhow::anyhow!("{msg}")
}

fn install(args: &[String]) -> Result<()> {
    let (mut clap_dir, mut vst3_dir) = default_dirs()?;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| anyhow_msg(&format!("{flag} needs a folder\n\n{USAGE}")))?;
        match flag.as_str() {
            "--clap-dir" => clap_dir = PathBuf::from(value),
            "--vst3-dir" => vst3_dir = PathBuf::from(value),
            _ => return Err(anyhow_msg(&format!("unknown option {flag}\n\n{USAGE}"))),
        }
    }
    nice_plug_xtask::chdir_workspace_root()?;
    let bundled = Path::new("target/bundled");
    let mut installed = 0;
    for (ext, dir) in [("clap", &clap_dir), ("vst3", &vst3_dir)] {
        let src = bundled.join(format!("Echoel Jam.{ext}"));
        if !src.exists() {
            continue;
        }
        std::fs::create_dir_all(dir)?;
        let dst = dir.join(src.file_name().expect("bundle has a name"));
        if dst.is_dir() {
            std::fs::remove_dir_all(&dst)?;
        }
        copy_recursively(&src, &dst)?;
        println!("installed {}", dst.display());
        installed += 1;
    }
    if installed == 0 {
        return Err(anyhow_msg(
            "no bundles in target/bundled: run `cargo xtask bundle echoel-plugin --release` first",
        ));
    }
    Ok(())
}

fn copy_recursively(src: &Path, dst: &Path) -> Result<()> {
    if src.is_dir() {
        std::fs::create_dir_all(dst)?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            copy_recursively(&entry.path(), &dst.join(entry.file_name()))?;
        }
    } else {
        std::fs::copy(src, dst)?;
    }
    Ok(())
}
