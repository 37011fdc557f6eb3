//! `frugal serve`: the OpenAI-compatible server (crate `frugal-server`) over the batching
//! scheduler. The model, tokenizer and template live for the whole process; the scheduler runs
//! on its own thread and the HTTP side on a tokio runtime.

use anyhow::Context;
use frugal_engine::scheduler::{Scheduler, SchedulerConfig};
use frugal_model::Model;
use frugal_server::tools::ToolFormat;
use frugal_server::{AppState, ModelInfo, ServerOptions};

use crate::session::{self, GenFlags, Opened};

/// `frugal serve` flags.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A model folder, a GGUF file, or ORG/NAME in the local Hugging Face cache (default: the
    /// embedded model).
    #[arg(long)]
    pub model: Option<String>,
    /// Address to listen on (127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Sequences generated at once (continuous batching slots).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Positions per sequence, prompt included (default: the model's, at most 4096).
    #[arg(long)]
    pub ctx_size: Option<usize>,
    /// Require `Authorization: Bearer KEY` on the API.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body: usize,
    /// Requests waiting for a slot before more are refused with 429 (default: 64 per slot).
    #[arg(long)]
    pub max_queue: Option<usize>,
    /// Threads for the large matrix products (default: available parallelism).
    #[arg(long)]
    pub threads: Option<usize>,
    /// --max-memory and the expert cache's settings.
    #[command(flatten)]
    pub memory: crate::residency::MemoryFlags,
}

/// Run the command.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    if args.parallel == 0 {
        anyhow::bail!("--parallel must be at least 1");
    }
    let Opened {
        spec,
        files,
        config,
        tokenizer,
        template,
        style,
    } = session::open(args.model.as_deref())?;
    // They serve until the process ends.
    let files = Box::leak(Box::new(files));
    let tokenizer = Box::leak(Box::new(tokenizer));
    let template = template.map(|t| &*Box::leak(Box::new(t)));
    let tool_format = files
        .chat_template()
        .map_or(ToolFormat::None, ToolFormat::detect);
    // The model's defaults (generation_config.json); each request overrides them.
    let flags = GenFlags {
        max_tokens: 1,
        temperature: None,
        top_k: None,
        top_p: None,
        min_p: None,
        repetition_penalty: None,
        seed: None,
        stop: Vec::new(),
        threads: None,
        hide_thinking: false,
        quant: None,
        memory: Default::default(),
    };
    let sampling = flags.sampling(files)?;
    let stop = flags.stop_criteria(files, &config, tokenizer);
    let mut model = Model::load_with(files, args.memory.load_options())
        .with_context(|| format!("loading {spec}"))?;
    if let Some(t) = args.threads {
        model.set_threads(t.max(1));
    }
    // The KV cache is charged for every slot's full context. The model keeps the cache.
    let ctx_estimate = args
        .ctx_size
        .unwrap_or(4096)
        .min(config.max_position_embeddings);
    crate::residency::attach(
        &args.memory,
        files,
        &mut model,
        ctx_estimate * args.parallel,
    )?;
    let model = Box::leak(Box::new(model));
    let ctx_size = args
        .ctx_size
        .unwrap_or(4096)
        .min(config.max_position_embeddings);
    if ctx_size < 2 {
        anyhow::bail!("--ctx-size must be at least 2");
    }
    let mut sched_config = SchedulerConfig::new(args.parallel, ctx_size);
    if let Some(q) = args.max_queue {
        sched_config.max_queue = q;
    }
    let (scheduler, handle) = Scheduler::new(model, tokenizer, sched_config);
    std::thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || scheduler.run())?;

    let id = spec
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|_| args.model.is_some())
        .unwrap_or("frugal-default")
        .to_owned();
    let info = ModelInfo {
        id,
        tokenizer,
        template,
        style,
        tool_format,
        eos_token_ids: stop.eos_token_ids,
        sampling,
    };
    let options = ServerOptions {
        api_key: args.api_key.clone(),
        body_limit: args.max_body,
        ..ServerOptions::default()
    };
    let state = AppState::new(handle, info, options);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("binding {}:{}", args.host, args.port))?;
        let addr = listener.local_addr()?;
        // Tests and scripts read this line for the port.
        println!("frugal serve: listening on http://{addr} (model {spec})");
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        frugal_server::serve(listener, state, shutdown).await?;
        anyhow::Ok(())
    })
}
