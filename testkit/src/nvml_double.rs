//! The NVML test double: `nvml-double/nvml_double.c` built with the machine's `cc` into the
//! target folder, and loaded by `host::gpu` through nvml-wrapper as if it were
//! `libnvidia-ml.so.1` (`THREADCYCLE_NVML_LIB`). Its readings come from a script; the format is
//! in the C file's header.
//!
//! - [`library`]: the built library, shared by every test of one build. A process that loads
//!   it finds its script in `THREADCYCLE_NVML_DOUBLE` (set it on the child's command).
//! - [`Scripted`]: a private copy of the library with its script beside it, for tests that run
//!   in parallel threads of one process (each copy is a separate library with its own state).
//! - [`H200`], [`RTX_5070_TI`], [`TWO_GPUS`]: scripts with real cards' figures.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Environment variable the double reads its script's path from (the script beside the
/// library wins when there is one).
pub const SCRIPT_ENV: &str = "THREADCYCLE_NVML_DOUBLE";

/// File name of the script the double looks for beside itself.
pub const SIDE_SCRIPT: &str = "nvml-double.script";

/// The C source, in this package.
const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/nvml-double/nvml_double.c");

/// One NVIDIA H200 as NVML reported it on a real machine: a 6,016-bit bus and a 3,201 MHz
/// maximum memory clock (→ 4,814 GB/s). 141 GB card: the total below is 141 GB in GiB, the
/// driver's exact figure was not recorded. Busy, drawing 650 W.
pub const H200: &str = "\
driver = 570.133.20
gpu0.name = NVIDIA H200
gpu0.memory_total = 131.3GiB
gpu0.memory_reserved = 0.5GiB
gpu0.memory_used = 60GiB
gpu0.bus_width = 6016
gpu0.max_clock_mem = 3201
gpu0.clock_mem = 3201
gpu0.max_clock_sm = 1980
gpu0.clock_sm = 1980
gpu0.temperature = 45
gpu0.power = 650000
gpu0.utilization = 95
gpu0.throttle = 0x0
";

/// An RTX 5070 Ti: 16 GiB of 28 Gbps GDDR7 on a 256-bit bus, the memory clock as NVML reports
/// GDDR7 (half the data rate: 14001 MHz, as an RTX 5090 at its stock 28 Gbps shows) → 896 GB/s.
/// 15.5 GiB of the 16 are taken (0.45 GiB of it the driver's reservation, as on an RTX 5070).
/// A GeForce card: no per-process memory (`n/a`), no permission for the energy counter.
pub const RTX_5070_TI: &str = "\
driver = 580.95.05
gpu0.name = NVIDIA GeForce RTX 5070 Ti
gpu0.memory_total = 16GiB
gpu0.memory_reserved = 0.45GiB
gpu0.memory_used = 15.05GiB
gpu0.bus_width = 256
gpu0.max_clock_mem = 14001
gpu0.clock_mem = 13801
gpu0.max_clock_sm = 3090
gpu0.clock_sm = 2805
gpu0.temperature = 38
gpu0.power = 28500
gpu0.energy = no_permission
gpu0.utilization = 3
gpu0.throttle = 0x1
gpu0.processes = 4242:n/a
";

/// Two GPUs: an RTX 4090 (384 bits × 10501 MHz → 1008 GB/s) and an RTX 3090 whose driver refuses
/// utilisation, throttle reasons and the bus width (not supported) and the power reading (no
/// permission).
pub const TWO_GPUS: &str = "\
driver = 550.120
gpu0.name = NVIDIA GeForce RTX 4090
gpu0.memory_total = 24GiB
gpu0.memory_used = 1GiB
gpu0.bus_width = 384
gpu0.max_clock_mem = 10501
gpu0.clock_mem = 10251
gpu0.clock_sm = 2520
gpu0.temperature = 41
gpu0.power = 30000
gpu0.energy = 1000000
gpu0.utilization = 0
gpu0.throttle = 0x0
gpu1.name = NVIDIA GeForce RTX 3090
gpu1.memory_total = 24GiB
gpu1.memory_used = 2GiB
gpu1.max_clock_mem = 9751
gpu1.temperature = 50
gpu1.power = no_permission
gpu1.utilization = not_supported
gpu1.throttle = not_supported
";

/// The double built once per build (`target/<profile>/nvml-double/libnvml-double.so`), rebuilt
/// when the C source is newer. Panics with the compiler's message when `cc` fails.
pub fn library() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build("libnvml-double.so", &[])).clone()
}

/// The double as an older driver's library: without `nvmlDeviceGetTotalEnergyConsumption` and
/// `nvmlDeviceGetMemoryBusWidth` (`libnvml-double-old.so`).
pub fn old_driver_library() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build("libnvml-double-old.so", &["-DNVML_DOUBLE_OLD_DRIVER"])).clone()
}

fn build(name: &str, defines: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test>-<hash> → target/<profile>/nvml-double/
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|p| p.join("nvml-double"))
        .unwrap_or_else(|| std::env::temp_dir().join("threadcycle-nvml-double"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let lib = dir.join(name);
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&lib).is_some_and(|built| modified(Path::new(SOURCE)).is_some_and(|src| built >= src)) {
        return lib;
    }
    // Build beside it and rename: another test process may be loading the old one right now.
    let tmp = dir.join(format!("{name}.{}", std::process::id()));
    let out = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-Wextra"])
        .args(defines)
        .arg("-o")
        .arg(&tmp)
        .arg(SOURCE)
        .arg("-lpthread")
        .output()
        .unwrap_or_else(|e| panic!("cannot run `cc` to build the NVML double: {e} (install a C compiler)"));
    assert!(
        out.status.success(),
        "building the NVML double failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &lib).unwrap_or_else(|e| panic!("cannot move the double into {}: {e}", lib.display()));
    lib
}

/// A private copy of the double with `script` beside it, removed on drop.
#[derive(Debug)]
pub struct Scripted {
    dir: tempfile::TempDir,
}

impl Scripted {
    /// Copies the built double into a fresh folder and writes `script` beside it.
    pub fn new(script: &str) -> Scripted {
        Self::of(&library(), script)
    }

    /// [`Scripted::new`] for the given build of the double (e.g. [`old_driver_library`]).
    pub fn of(library: &Path, script: &str) -> Scripted {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        std::fs::copy(library, dir.path().join("libnvml-double.so")).unwrap_or_else(|e| panic!("copy: {e}"));
        std::fs::write(dir.path().join(SIDE_SCRIPT), script).unwrap_or_else(|e| panic!("script: {e}"));
        Scripted { dir }
    }

    /// The library to load (`Gpus::probe_lib`).
    pub fn lib(&self) -> PathBuf {
        self.dir.path().join("libnvml-double.so")
    }
}
