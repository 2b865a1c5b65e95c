//! The `duckhour` binary: parse arguments, run, exit with the library's code.

use clap::Parser;

fn main() {
    // glibc gives each new thread its own malloc arena; DuckDB, the staging
    // threads and the HTTP client together made resident memory grow with the
    // length of a backfill (190 MB for a month, 290 MB for three). Two arenas
    // keep it flat. Blocks of 256 KiB and more (staged columns, DuckDB's
    // buffers) are mapped and unmapped on their own: otherwise glibc raises
    // that threshold after the first free and serves them from the heap,
    // where a batch's columns, kept until it is transformed, leave holes (peak RSS
    // for a month 126-130 MB instead of 75-76). Measured with scripts/bench.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
    // `duckhour status | head` should end quietly, as Unix tools do, rather
    // than panic on a closed pipe.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // A panic message may quote a value (a service's answer, a connection
    // string): print it through the same redaction as every other message.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("{}", duckhour::secret::redact(&info.to_string()));
    }));
    let cli = duckhour::cli::Cli::parse();
    std::process::exit(duckhour::run(cli));
}
