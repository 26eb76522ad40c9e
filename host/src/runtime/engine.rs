//! The one wasmtime [`Engine`]: pooling allocator, copy-on-write memory
//! images, epoch interruption, and the ticker thread that drives epochs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the longest a busy guest runs before it
/// yields to the executor (and so how precisely timeouts are enforced).
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits of the instance pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Component instances alive at once.
    pub instances: u32,
    /// Bytes one linear memory may grow to; past it `memory.grow` fails.
    pub memory_bytes: usize,
}

pub fn build(limits: PoolLimits) -> wasmtime::Result<Engine> {
    // A Rust std guest built by wasm-component-ld has one main module plus a
    // few small shim modules; these caps leave room for that shape.
    const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
    const MEMORIES_PER_COMPONENT: u32 = 2;
    const TABLES_PER_COMPONENT: u32 = 8;

    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(limits.instances)
        .total_core_instances(limits.instances * CORE_INSTANCES_PER_COMPONENT)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .total_memories(limits.instances * MEMORIES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .total_tables(limits.instances * TABLES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .total_stacks(limits.instances)
        .max_memory_size(limits.memory_bytes);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        // Guest backtraces are cheap to keep; symbolizing host frames is not.
        .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
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
