//! The one wasmtime [`Engine`]: pooling allocator, copy-on-write memory
//! images, epoch interruption, and the ticker thread that drives epochs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the longest a busy guest runs before it
/// yields to the executor (and so how precisely timeouts are enforced).
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits of the instance pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Component instances serving requests at once.
    pub instances: u32,
    /// Bytes one linear memory may grow to; past it `memory.grow` fails.
    pub memory_bytes: usize,
    /// Requests one instance may serve (1: a fresh instance per request).
    pub reuse: u32,
}

impl PoolLimits {
    /// `INSTANCE_LIMIT`, `INSTANCE_MEMORY_MB` and `INSTANCE_REUSE`.
    pub fn from_config(config: &crate::config::Config) -> PoolLimits {
        PoolLimits {
            instances: config.instance_limit,
            memory_bytes: config.instance_memory_mb as usize * 1024 * 1024,
            reuse: config.instance_reuse,
        }
    }

    /// Warm instances that may wait, idle, for their next request: as many
    /// as may serve at once, and none without reuse.
    pub fn idle(&self) -> u32 {
        if self.reuse > 1 { self.instances } else { 0 }
    }

    /// Pool slots: the serving instances and the idle ones, so an idle
    /// instance never takes the slot a request needs.
    fn slots(&self) -> u32 {
        self.instances + self.idle()
    }
}

/// The engine for `limits`. Freed instance slots are reset in place where
/// the kernel has `PAGEMAP_SCAN` (Linux 6.7+), with `madvise` elsewhere.
pub fn build(limits: PoolLimits) -> wasmtime::Result<Engine> {
    match Engine::new(&config(limits, true)) {
        Ok(engine) => Ok(engine),
        Err(err) => {
            tracing::info!(
                reason = format!("{err:#}"),
                "PAGEMAP_SCAN is unavailable: freed instance memory is reset with madvise (slower; see docs/performance.md)"
            );
            Engine::new(&config(limits, false))
        }
    }
}

fn config(limits: PoolLimits, reset_in_place: bool) -> Config {
    // A Rust std guest built by wasm-component-ld has one main module plus a
    // few small shim modules; these caps leave room for that shape.
    const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
    const MEMORIES_PER_COMPONENT: u32 = 2;
    const TABLES_PER_COMPONENT: u32 = 8;
    // A std guest's stack (1 MiB, at the bottom), its data and the start of
    // its heap: what a request dirties lies in these first bytes.
    const MEMORY_KEEP_RESIDENT: usize = 2 << 20;
    const TABLE_KEEP_RESIDENT: usize = 64 << 10;

    let mut pool = PoolingAllocationConfig::new();
    let slots = limits.slots();
    pool.total_component_instances(slots)
        .total_core_instances(slots * CORE_INSTANCES_PER_COMPONENT)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .total_memories(slots * MEMORIES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .total_tables(slots * TABLES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .total_stacks(slots)
        .max_memory_size(limits.memory_bytes);
    if reset_in_place {
        // madvise on every freed slot flushed the TLB of every core (an IPI
        // each), and the slot's next instance took the page faults again.
        // PAGEMAP_SCAN finds the pages the instance dirtied and only those
        // are restored, with memset; the slot stays resident. Without it,
        // keeping memory resident would memset all of it on every request.
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT.min(limits.memory_bytes))
            .table_keep_resident(TABLE_KEEP_RESIDENT);
    }

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        // Guest backtraces are cheap to keep; symbolizing host frames is not.
        .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a thread of its own;
/// stopped and joined on drop.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: Engine) -> std::io::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })?;
        Ok(EpochTicker { stop, thread: Some(thread) })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
