//! Writing a command's report to stdout. A reader that goes away
//! (`sightline render | head -1`) ends the command quietly with status 0,
//! as for any Unix filter; `println!` would panic, and the release build's
//! `panic = "abort"` turned that into exit 134.

use std::io::{ErrorKind, Write};

/// Writes to stdout; on a closed pipe, exits 0 at once.
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args) {
        drop(out);
        failed(&e);
    }
}

/// Ends the process after a failed write to stdout.
pub fn failed(e: &std::io::Error) -> ! {
    if e.kind() == ErrorKind::BrokenPipe {
        std::process::exit(i32::from(super::EXIT_OK));
    }
    eprintln!("error: writing the report to stdout: {e}");
    std::process::exit(i32::from(super::EXIT_ERROR));
}

/// The net under everything else that prints with `println!` (the
/// rollout's progress lines): std panics with this message on a failed
/// write to stdout, so a closed pipe still ends quietly.
pub fn exit_quietly_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or_default();
        if msg.starts_with("failed printing to stdout") && msg.contains("os error 32") {
            std::process::exit(i32::from(super::EXIT_OK));
        }
        default(info);
    }));
}

/// `print!` to stdout that ends quietly on a closed pipe.
macro_rules! out {
    ($($t:tt)*) => {
        $crate::cli::out::write(format_args!($($t)*))
    };
}

/// `println!` to stdout that ends quietly on a closed pipe.
macro_rules! outln {
    () => {
        $crate::cli::out::write(format_args!("\n"))
    };
    ($($t:tt)*) => {
        $crate::cli::out::write(format_args!("{}\n", format_args!($($t)*)))
    };
}

pub(crate) use {out, outln};
