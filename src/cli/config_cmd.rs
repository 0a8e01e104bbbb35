//! `sightline config`: the merged configuration and where each value came from.

use anyhow::Result;

use crate::agent::Ctx;
use crate::config::{LoadedConfig, Origin};

/// Runs `config`.
pub fn run(ctx: &Ctx, json_out: bool) -> Result<u8> {
    let cfg = crate::config::load(&ctx.root)?;
    if json_out {
        let v = serde_json::json!({
            "config": cfg.config,
            "origins": cfg.origins,
            "sources": cfg.sources,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render(&cfg)?);
    }
    Ok(0)
}

/// The merged configuration as TOML, each value annotated with its origin.
pub fn render(cfg: &LoadedConfig) -> Result<String> {
    let table = toml::Table::try_from(&cfg.config)?;
    let mut out = String::from("# Effective sightline configuration.\n# Files merged, in order:\n");
    if cfg.sources.is_empty() {
        out.push_str("#   (none: built-in defaults only)\n");
    }
    for s in &cfg.sources {
        out.push_str(&format!(
            "#   {}{}\n",
            s.path.display(),
            if s.masked {
                " (masked by /dev/null)"
            } else {
                ""
            }
        ));
    }
    let mut sections = Vec::new();
    for (k, v) in &table {
        match v {
            toml::Value::Table(t) => sections.push((k.clone(), t.clone())),
            _ => out.push_str(&line(cfg, k, k, v)),
        }
    }
    // Keys that are unset (None) do not serialize; list them so every option is visible.
    for (name, t) in sections {
        out.push_str(&format!("\n[{name}]\n"));
        for (k, v) in &t {
            out.push_str(&line(cfg, &format!("{name}.{k}"), k, v));
        }
        for unset in unset_keys(&name) {
            if !t.contains_key(unset) {
                out.push_str(&format!("# {unset} = (unset)\n"));
            }
        }
    }
    Ok(out)
}

fn line(cfg: &LoadedConfig, dotted: &str, key: &str, v: &toml::Value) -> String {
    let origin = match cfg.origin(dotted) {
        Origin::Default => "default".to_string(),
        o => o.to_string(),
    };
    format!("{key} = {v}  # {origin}\n")
}

fn unset_keys(section: &str) -> impl Iterator<Item = &'static str> + '_ {
    crate::config::OPTIONAL_KEYS
        .iter()
        .filter_map(move |k| k.strip_prefix(section)?.strip_prefix('.'))
}
