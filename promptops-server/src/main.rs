//! `promptops`: the registry server and CLI. The registry itself (serve,
//! push, publish, …) arrives with the server issue; today the binary offers
//! the offline commands that work on a prompt directory.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use promptops_core::{Client, GetOptions, format};

#[derive(Parser)]
#[command(name = "promptops", version, about = "promptops registry and CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check every prompt file under a directory; exit 1 on any problem.
    Check {
        dir: PathBuf,
    },
    /// Compile a prompt directory into a snapshot bundle (JSON with a content hash).
    Bundle {
        dir: PathBuf,
        /// Output file.
        #[arg(short, long)]
        out: PathBuf,
        /// Project name (default: the directory's name).
        #[arg(long)]
        project: Option<String>,
    },
    /// Render a prompt from a directory or bundle.
    Render {
        /// `module/name`
        prompt: String,
        /// Prompt directory.
        #[arg(long, conflicts_with = "bundle")]
        prompts: Option<PathBuf>,
        /// Snapshot bundle.
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// JSON file with the variables.
        #[arg(long)]
        vars: Option<PathBuf>,
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        version: Option<u32>,
        /// Print JSON (text or messages, config, tokens, cost).
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { dir } => {
            let report = format::load_dir(&dir, &format::dir_project_name(&dir))?;
            let compiled = promptops_core::CompiledSnapshot::compile(
                report.snapshot.clone(),
                Default::default(),
                promptops_core::Source::Disk,
            );
            let mut problems = 0;
            for d in report.diagnostics.iter().chain(compiled.diagnostics()) {
                eprintln!("{d}");
                problems += 1;
            }
            println!(
                "{} prompts, {problems} problems, hash {}",
                report.snapshot.prompts.len(),
                report.snapshot.hash
            );
            Ok(if problems == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Bundle { dir, out, project } => {
            let project = project.unwrap_or_else(|| format::dir_project_name(&dir));
            let report = format::load_dir(&dir, &project)?;
            for d in &report.diagnostics {
                eprintln!("{d}");
            }
            if !report.diagnostics.is_empty() {
                anyhow::bail!("{} prompt files could not be read", report.diagnostics.len());
            }
            report.snapshot.write_bundle(&out)?;
            println!(
                "wrote {} ({} prompts, {})",
                out.display(),
                report.snapshot.prompts.len(),
                report.snapshot.hash
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Render { prompt, prompts, bundle, vars, label, version, json } => {
            let mut b = Client::builder();
            if let Some(d) = prompts {
                b = b.prompts_dir(d);
            }
            if let Some(f) = bundle {
                b = b.bundle(f);
            }
            let client = b.build()?;
            let vars: serde_json::Value = match vars {
                Some(f) => serde_json::from_slice(
                    &std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?,
                )
                .with_context(|| format!("parsing {}", f.display()))?,
                None => serde_json::json!({}),
            };
            let opts = GetOptions { label, version, fallback: None };
            let p = client.get_with(&prompt, &opts)?;
            let r = p.render(&promptops_core::to_value(&vars))?;
            if json {
                let tokens = r.input_tokens();
                let out = serde_json::json!({
                    "prompt": p.name(),
                    "version": p.version(),
                    "label": p.label(),
                    "source": p.source(),
                    "text": r.text,
                    "messages": r.messages,
                    "config": &*r.config,
                    "input_tokens": tokens.count,
                    "tokens_exact": tokens.exact,
                    "estimated_cost_usd": r.estimated_cost_usd(),
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("{}", r.as_text());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
