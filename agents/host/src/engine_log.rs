//! The engine's own account of the memory it allocated, read from its log: model-weight, KV-cache
//! and compute buffers per device, and the layers it offloaded to the GPU.
//!
//! Two families of lines are read (`docs/ENGINE-FACTS.md`, "The engine's memory account"):
//!
//! - **llama.cpp** (llama-server at `-lv 4`, and Ollama's llama engine, which prints the vendored
//!   llama.cpp's lines at INFO, `o:llama/llama.go:53-59`):
//!   `load_tensors: %12s model buffer size = %8.2f MiB` (`o:llama/llama.cpp/src/llama-model.cpp:6181`,
//!   `L:src/llama-model.cpp:1932`), `llama_kv_cache: %10s KV buffer size = %8.2f MiB`
//!   (`o:…/llama-kv-cache.cpp:179`, `L:src/llama-kv-cache.cpp:291`; Gemma-3's iSWA cache prints
//!   two), `%10s compute buffer size = %8.2f MiB` with the tag `llama_context` or `sched_reserve`
//!   (`o:…/llama-context.cpp:381`, `L:src/llama-context.cpp:742`), `%10s  output buffer size`
//!   (`o:…/llama-context.cpp:188`; counted with compute), and `offloaded %d/%d layers to GPU`
//!   (`o:…/llama-model.cpp:6176`, `L:src/llama-model.cpp:1926`).
//! - **Ollama's new engine** (slog text, `o:logutil/logutil.go:14-31`): the server's summary when
//!   `Load` returns (`o:llm/server.go:669-673`), `msg="model weights" device=CUDA0 size="4.1 GiB"`,
//!   `msg="kv cache" …`, `msg="compute graph" …` (`o:ml/device.go:201-240`; sizes as
//!   `format.HumanBytes2`, `o:format/bytes.go:52-63`), and the runner's
//!   `msg="offloaded %d/%d layers to GPU"` (`o:ml/backend/ggml/ggml.go:492`).
//!
//! A log can hold several loads: llama.cpp's `--fit` dry run prints `0.00 MiB` buffers first
//! (`L:common/fit.cpp:40-60`, at `-lv 5`), a restarted engine prints its own. The last load with
//! non-zero weights is the account.

use protocol::results::{DeviceBytes, EngineMemory};

/// What kind of buffer a line names.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Weights,
    Kv,
    Compute,
}

/// The engine's memory account from `log`, labelled `source`; None when the log names no buffer
/// and no offloaded layers (e.g. llama-server below `-lv 4`).
pub fn engine_memory(log: &str, source: &str) -> Option<EngineMemory> {
    let mut loads: Vec<EngineMemory> = Vec::new();
    let mut cur = EngineMemory { source: source.to_string(), ..Default::default() };
    let mut offloaded = None;
    for line in log.lines() {
        if let Some(layers) = offloaded_in(line) {
            offloaded = Some(layers);
            continue;
        }
        let Some((kind, device, bytes)) = llama_cpp_buffer(line).or_else(|| ollama_summary(line)) else { continue };
        // A weights line after KV or compute lines starts another load.
        if kind == Kind::Weights && (!cur.kv.is_empty() || !cur.compute.is_empty()) {
            loads.push(std::mem::replace(&mut cur, EngineMemory { source: source.to_string(), ..Default::default() }));
        }
        let list = match kind {
            Kind::Weights => &mut cur.weights,
            Kind::Kv => &mut cur.kv,
            Kind::Compute => &mut cur.compute,
        };
        match list.iter_mut().find(|d| d.device == device) {
            Some(d) => d.bytes += bytes,
            None => list.push(DeviceBytes { device, bytes }),
        }
    }
    loads.push(cur);
    let mut account = loads
        .into_iter()
        .rev()
        .find(|l| l.weights_bytes() > 0)
        .unwrap_or_else(|| EngineMemory { source: source.to_string(), ..Default::default() });
    account.offloaded_layers = offloaded;
    (!account.is_empty()).then_some(account)
}

/// The weights' quantisation as llama.cpp names it when it loads a GGUF (`Q4_K - Medium`): the
/// loader's `%s: file type   = %s` line (`L:src/llama-model-loader.cpp`, `print_info`, with
/// `llama_model_ftype_name`), the name `llama-bench` puts in its `model` column. The last load's.
pub fn file_type(log: &str) -> Option<String> {
    log.lines()
        .filter_map(|l| l.split_once("print_info: file type").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once('=').map(|(_, v)| v.trim().to_string()))
        .rfind(|v| !v.is_empty())
}

/// `offloaded N/M layers to GPU` in either engine's form.
pub fn offloaded_in(line: &str) -> Option<(u32, u32)> {
    let rest = &line[line.find("offloaded ")? + "offloaded ".len()..];
    let (frac, tail) = rest.split_once(' ')?;
    if !tail.starts_with("layers") {
        return None;
    }
    let (a, b) = frac.split_once('/')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// `… <device> model|KV|compute|output buffer size = <x> MiB` (llama.cpp).
fn llama_cpp_buffer(line: &str) -> Option<(Kind, String, u64)> {
    let at = line.find(" buffer size =")?;
    let (head, tail) = line.split_at(at);
    let mut words = head.split_whitespace().rev();
    let kind = match words.next()? {
        "model" => Kind::Weights,
        "KV" => Kind::Kv,
        "compute" | "output" => Kind::Compute,
        _ => return None,
    };
    let device = words.next()?.trim_end_matches(':');
    if device.is_empty() || device.ends_with(':') {
        return None;
    }
    let value = tail[" buffer size =".len()..].trim();
    Some((kind, device.to_string(), size_bytes(value)?))
}

/// `msg="model weights" device=CUDA0 size="4.1 GiB"` (Ollama's new engine).
fn ollama_summary(line: &str) -> Option<(Kind, String, u64)> {
    let kind = if line.contains("msg=\"model weights\"") {
        Kind::Weights
    } else if line.contains("msg=\"kv cache\"") {
        Kind::Kv
    } else if line.contains("msg=\"compute graph\"") {
        Kind::Compute
    } else {
        return None;
    };
    let device = slog_value(line, "device")?;
    let size = slog_value(line, "size")?;
    Some((kind, device, size_bytes(&size)?))
}

/// The value of `key=` in a slog text line, unquoted (`key=value` or `key="a b"`).
fn slog_value(line: &str, key: &str) -> Option<String> {
    let pat = format!(" {key}=");
    let rest = &line[line.find(&pat)? + pat.len()..];
    if let Some(q) = rest.strip_prefix('"') {
        Some(q[..q.find('"')?].to_string())
    } else {
        Some(rest.split_whitespace().next()?.to_string())
    }
}

/// `235.16 MiB`, `4.1 GiB`, `512 B` → bytes (binary units, as both engines print them).
fn size_bytes(text: &str) -> Option<u64> {
    let mut it = text.split_whitespace();
    let n: f64 = it.next()?.parse().ok()?;
    let unit = it.next().unwrap_or("B");
    let mult = match unit {
        "B" => 1.0,
        "KiB" | "KB" => 1024.0,
        "MiB" | "MB" => 1024.0 * 1024.0,
        "GiB" | "GB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" | "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    (n.is_finite() && n >= 0.0).then(|| (n * mult).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;

    #[test]
    fn the_file_type_is_the_loaders_line() {
        // As llama-server printed it here at -lv 4 for the demo GGUF.
        let log = "0.01.213.522 I print_info: file format = GGUF V3 (latest)\n0.01.213.523 I print_info: file type   = Q4_K - Medium\n0.01.833.096 I print_info: model params          = 268.10 M\n";
        assert_eq!(file_type(log).as_deref(), Some("Q4_K - Medium"));
        assert_eq!(file_type("load_tensors: CPU model buffer size = 1.00 MiB\n"), None);
    }

    fn mib(x: f64) -> u64 {
        (x * MIB).round() as u64
    }

    /// llama-server 11434 at `-lv 4` on CPU, Gemma 3 270M, `-c 2048 -np 4` (observed lines).
    const LLAMA_SERVER_CPU: &str = "\
0.01.151.709 I common_params_fit_impl: projected to use 280 MiB of host memory vs. 24105 MiB of total host memory
0.02.063.350 I load_tensors: loading model tensors, this can take a while... (load_mode = mmap)
0.02.541.013 I load_tensors:   CPU_Mapped model buffer size =   235.16 MiB
0.02.541.089 I load_tensors:   CPU_REPACK model buffer size =    12.66 MiB
0.02.581.666 I llama_context:        CPU  output buffer size =     4.00 MiB
0.02.581.669 I llama_kv_cache_iswa: creating non-SWA KV cache, size = 2048 cells
0.02.581.774 I llama_kv_cache:        CPU KV buffer size =     6.00 MiB
0.02.589.404 I llama_kv_cache: size =    6.00 MiB (  2048 cells,   3 layers,  4/1 seqs), K (f16):    3.00 MiB, V (f16):    3.00 MiB
0.02.589.433 I llama_kv_cache_iswa: creating     SWA KV cache, size = 2048 cells
0.02.589.567 I llama_kv_cache:        CPU KV buffer size =    30.00 MiB
0.02.616.380 I llama_kv_cache: size =   30.00 MiB (  2048 cells,  15 layers,  4/1 seqs), K (f16):   15.00 MiB, V (f16):   15.00 MiB
0.02.622.347 I sched_reserve:        CPU compute buffer size =    22.28 MiB
0.02.622.400 I sched_reserve: graph: nodes = 730, splits = 1, input objects = 4, input tensors = 13
";

    #[test]
    fn llama_server_cpu_account() {
        let m = engine_memory(LLAMA_SERVER_CPU, "llama-server log").unwrap();
        assert_eq!(m.source, "llama-server log");
        assert_eq!(
            m.weights,
            vec![
                DeviceBytes { device: "CPU_Mapped".into(), bytes: mib(235.16) },
                DeviceBytes { device: "CPU_REPACK".into(), bytes: mib(12.66) }
            ]
        );
        // The iSWA cache's two lines add up on one device.
        assert_eq!(m.kv, vec![DeviceBytes { device: "CPU".into(), bytes: mib(36.0) }]);
        // The logits output buffer counts with the compute buffers.
        assert_eq!(m.compute, vec![DeviceBytes { device: "CPU".into(), bytes: mib(4.0) + mib(22.28) }]);
        assert_eq!(m.offloaded_layers, None);
        assert_eq!(m.vram_bytes(), 0);
        assert_eq!(m.ram_bytes(), mib(235.16) + mib(12.66) + mib(36.0) + mib(26.28));
    }

    #[test]
    fn the_fit_dry_run_zero_lines_are_not_the_account() {
        let dry = "\
0.00.100.000 D load_tensors:   CPU_Mapped model buffer size =     0.00 MiB
0.00.100.100 D llama_kv_cache:        CPU KV buffer size =     0.00 MiB
0.00.100.200 D sched_reserve:        CPU compute buffer size =    22.28 MiB
0.00.100.300 I common_fit_params: successfully fit params to free device memory
";
        let m = engine_memory(&format!("{dry}{LLAMA_SERVER_CPU}"), "x").unwrap();
        assert_eq!(m.weights_bytes(), mib(235.16) + mib(12.66));
        assert_eq!(m.kv_bytes(), mib(36.0));
        // Only the dry run: no non-zero weights, so no account of buffers.
        assert_eq!(engine_memory(dry, "x"), None);
    }

    #[test]
    fn llama_cpp_gpu_lines_split_host_and_device() {
        let log = "\
load_tensors: offloading 20 repeating layers to GPU
load_tensors: offloaded 20/49 layers to GPU
load_tensors:        CUDA0 model buffer size =  7123.45 MiB
load_tensors:   CPU_Mapped model buffer size =  9876.50 MiB
llama_kv_cache:      CUDA0 KV buffer size =   640.00 MiB
llama_kv_cache:        CPU KV buffer size =   896.00 MiB
llama_context:      CUDA0 compute buffer size =   560.00 MiB
llama_context:  CUDA_Host compute buffer size =    24.01 MiB
";
        let m = engine_memory(log, "llama-server log").unwrap();
        assert_eq!(m.offloaded_layers, Some((20, 49)));
        assert_eq!(m.vram_bytes(), mib(7123.45) + mib(640.0) + mib(560.0));
        assert_eq!(m.ram_bytes(), mib(9876.5) + mib(896.0) + mib(24.01));
    }

    /// Ollama 0.12.6's llama engine (deepseek-coder): slog lines around the raw llama.cpp ones.
    #[test]
    fn ollama_llama_engine_raw_lines() {
        let log = "\
time=2025-10-20T09:14:02.113Z level=INFO source=server.go:545 msg=offload library=CUDA layers.requested=-1 layers.model=63 layers.offload=31 layers.split=[31] memory.available=\"[15.2 GiB]\"
load_tensors: offloading 31 repeating layers to GPU
load_tensors: offloaded 31/63 layers to GPU
load_tensors:        CUDA0 model buffer size =  8970.12 MiB
load_tensors:   CPU_Mapped model buffer size = 18210.33 MiB
llama_kv_cache:      CUDA0 KV buffer size =   992.00 MiB
llama_kv_cache:        CPU KV buffer size =  1024.00 MiB
llama_context:      CUDA0 compute buffer size =   324.00 MiB
llama_context:  CUDA_Host compute buffer size =    20.01 MiB
time=2025-10-20T09:14:09.880Z level=INFO source=server.go:1310 msg=\"llama runner started in 7.77 seconds\"
";
        let m = engine_memory(log, "ollama log (llama engine)").unwrap();
        assert_eq!(m.offloaded_layers, Some((31, 63)));
        assert_eq!(m.weights.len(), 2);
        assert_eq!(m.kv_bytes(), mib(2016.0));
    }

    /// Ollama 0.12.6's new engine (gemma3): the runner's offload lines (three load operations:
    /// fit, alloc, commit) and the server's summary when Load returns.
    #[test]
    fn ollama_new_engine_summary() {
        let log = "\
time=2025-10-20T09:20:01.000Z level=INFO source=server.go:676 msg=\"loading model\" \"model layers\"=35 requested=-1
time=2025-10-20T09:20:01.500Z level=INFO source=ggml.go:492 msg=\"offloaded 35/35 layers to GPU\"
time=2025-10-20T09:20:02.000Z level=INFO source=ggml.go:480 msg=\"offloading 34 repeating layers to GPU\"
time=2025-10-20T09:20:02.000Z level=INFO source=ggml.go:487 msg=\"offloading output layer to GPU\"
time=2025-10-20T09:20:02.000Z level=INFO source=ggml.go:492 msg=\"offloaded 35/35 layers to GPU\"
time=2025-10-20T09:20:03.000Z level=INFO source=device.go:206 msg=\"model weights\" device=CUDA0 size=\"2.3 GiB\"
time=2025-10-20T09:20:03.000Z level=INFO source=device.go:211 msg=\"model weights\" device=CPU size=\"525.0 MiB\"
time=2025-10-20T09:20:03.000Z level=INFO source=device.go:217 msg=\"kv cache\" device=CUDA0 size=\"782.0 MiB\"
time=2025-10-20T09:20:03.000Z level=INFO source=device.go:228 msg=\"compute graph\" device=CUDA0 size=\"1.1 GiB\"
time=2025-10-20T09:20:03.000Z level=INFO source=device.go:233 msg=\"compute graph\" device=CPU size=\"5.0 MiB\"
time=2025-10-20T09:20:03.000Z level=INFO source=device.go:238 msg=\"total memory\" size=\"4.7 GiB\"
";
        let m = engine_memory(log, "ollama log (new engine)").unwrap();
        assert_eq!(m.offloaded_layers, Some((35, 35)));
        let gib = |x: f64| (x * 1024.0 * MIB).round() as u64;
        assert_eq!(
            m.weights,
            vec![
                DeviceBytes { device: "CUDA0".into(), bytes: gib(2.3) },
                DeviceBytes { device: "CPU".into(), bytes: mib(525.0) }
            ]
        );
        assert_eq!(m.vram_bytes(), gib(2.3) + mib(782.0) + gib(1.1));
        assert_eq!(m.ram_bytes(), mib(525.0) + mib(5.0));
    }

    #[test]
    fn a_second_load_replaces_the_first() {
        let first =
            "load_tensors: CPU model buffer size = 100.00 MiB\nllama_kv_cache: CPU KV buffer size = 10.00 MiB\n";
        let second =
            "load_tensors: CPU model buffer size = 200.00 MiB\nllama_kv_cache: CPU KV buffer size = 20.00 MiB\n";
        let m = engine_memory(&format!("{first}{second}"), "x").unwrap();
        assert_eq!((m.weights_bytes(), m.kv_bytes()), (mib(200.0), mib(20.0)));
    }

    #[test]
    fn quiet_or_foreign_logs_give_nothing() {
        assert_eq!(engine_memory("", "x"), None);
        // llama-server at the default -lv 3 prints no buffer lines.
        assert_eq!(engine_memory("main: server is listening on http://127.0.0.1:8080\n", "x"), None);
        // Malformed sizes are skipped, not misread.
        assert_eq!(engine_memory("load_tensors: CPU model buffer size = lots MiB\n", "x"), None);
        assert_eq!(engine_memory("msg=\"model weights\" device=CPU size=\"3.0 parsecs\"\n", "x"), None);
        assert_eq!(offloaded_in("offloaded 3/x layers to GPU"), None);
        assert_eq!(offloaded_in("offloaded 3 files"), None);
    }
}
