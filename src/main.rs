//! The `duckhour` binary: parse arguments, run, exit with the library's code.

use clap::Parser;

fn main() {
    duckhour::memory::at_start();
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
