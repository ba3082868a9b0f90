//! What a command-line tool is expected to have: shell completions and a man page, both
//! generated from the clap definition in `cli.rs`, and the log format (text or JSON lines).

use crate::cli::Cli;
use clap::CommandFactory;

/// The completion script for `shell`, for the binary name `threadcycle`.
pub fn completions(shell: clap_complete::Shell) -> String {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "threadcycle", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The man page (section 1) as roff: the top-level page followed by one section per
/// subcommand, so `man threadcycle` documents every command and its options.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let cmd = Cli::command().name("threadcycle");
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        render_subcommand(&mut out, sub, "threadcycle")?;
    }
    Ok(out)
}

/// One subcommand's section (`.SH "THREADCYCLE UP"`): its synopsis, description and options as
/// subsections, then its own subcommands.
fn render_subcommand(out: &mut Vec<u8>, sub: &clap::Command, parent: &str) -> std::io::Result<()> {
    let name = format!("{parent} {}", sub.get_name());
    out.extend_from_slice(format!(".SH \"{}\"\n", name.to_uppercase()).as_bytes());
    let man = clap_mangen::Man::new(sub.clone().bin_name(name.clone()));
    let mut parts = Vec::new();
    man.render_synopsis_section(&mut parts)?;
    man.render_description_section(&mut parts)?;
    if sub.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut parts)?;
    }
    // clap_mangen writes each part as a section (`.SH`); under the command's own section they
    // are subsections.
    for line in String::from_utf8_lossy(&parts).lines() {
        match line.strip_prefix(".SH ") {
            Some(title) => out.extend_from_slice(format!(".SS {title}\n").as_bytes()),
            None => out.extend_from_slice(format!("{line}\n").as_bytes()),
        }
    }
    for s in sub.get_subcommands().filter(|s| !s.is_hide_set()) {
        render_subcommand(out, s, &name)?;
    }
    Ok(())
}

/// How the tracing output is written: `THREADCYCLE_LOG_FORMAT=json` (or `--log-json`) makes it
/// one JSON object per line, for log shippers (Loki, Vector, journald's JSON import).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with `message`), `span`s.
    Json,
}

impl LogFormat {
    /// The format asked for: the flag wins; else `THREADCYCLE_LOG_FORMAT` (`json` or `text`,
    /// any case); else text. An unknown value is an error naming it.
    pub fn choose(flag: bool, env: Option<&str>) -> Result<LogFormat, String> {
        if flag {
            return Ok(LogFormat::Json);
        }
        match env.map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(LogFormat::Text),
            Some(v) if v.is_empty() || v == "text" => Ok(LogFormat::Text),
            Some(v) if v == "json" => Ok(LogFormat::Json),
            Some(v) => Err(format!("THREADCYCLE_LOG_FORMAT=`{v}`: expected `json` or `text`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visible_subcommands() -> Vec<String> {
        Cli::command().get_subcommands().filter(|s| !s.is_hide_set()).map(|s| s.get_name().to_string()).collect()
    }

    #[test]
    fn bash_completion_names_every_subcommand() {
        let script = completions(clap_complete::Shell::Bash);
        assert!(script.contains("complete -F _threadcycle"), "{script}");
        let subs = visible_subcommands();
        assert!(subs.len() >= 14, "{subs:?}");
        // The words offered after `threadcycle `: the top level's `opts`.
        let top = script.lines().find(|l| l.contains("opts=\"-h")).expect("top-level opts");
        let words: Vec<&str> = top.trim().trim_start_matches("opts=\"").trim_end_matches('"').split(' ').collect();
        for s in &subs {
            assert!(words.contains(&s.as_str()), "bash completion lacks {s}: {top}");
        }
        // Options and value enums are there too.
        assert!(script.contains("--on-interrupt") && script.contains("--metrics-listen"), "{script}");
    }

    #[test]
    fn every_shell_gets_a_script() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
            clap_complete::Shell::Elvish,
            clap_complete::Shell::PowerShell,
        ] {
            let script = completions(shell);
            assert!(script.contains("nats-config") && script.contains("escalations"), "{shell}: {script}");
        }
    }

    #[test]
    fn man_page_is_roff_and_documents_every_subcommand() {
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        assert!(page.starts_with(".ie") || page.starts_with(".TH"), "{}", &page[..200.min(page.len())]);
        assert!(page.lines().any(|l| l.starts_with(".TH threadcycle 1")), "{}", &page[..300]);
        for s in visible_subcommands() {
            assert!(page.contains(&format!(".SH \"THREADCYCLE {}\"", s.to_uppercase())), "man page lacks {s}");
        }
        // A nested subcommand and an option's help text.
        assert!(page.contains(".SH \"THREADCYCLE PLAN CHECK\""));
        assert!(page.contains("on\\-interrupt"), "options are documented");
        // The hidden helper stays hidden.
        assert!(!page.contains("EXEC-WITH-PARENT") && !page.contains("exec\\-with\\-parent"));
        // The subcommands' parts are subsections, so the top level has each section once.
        assert_eq!(page.lines().filter(|l| *l == ".SH SYNOPSIS").count(), 1);
        assert!(page.lines().any(|l| l == ".SS OPTIONS"));
    }

    #[test]
    fn log_format_from_flag_and_environment() {
        assert_eq!(LogFormat::choose(false, None), Ok(LogFormat::Text));
        assert_eq!(LogFormat::choose(false, Some("JSON")), Ok(LogFormat::Json));
        assert_eq!(LogFormat::choose(false, Some("text")), Ok(LogFormat::Text));
        assert_eq!(LogFormat::choose(true, Some("text")), Ok(LogFormat::Json));
        assert!(LogFormat::choose(false, Some("yaml")).unwrap_err().contains("`yaml`"));
    }
}
