//! `ferry-worker`: placeholder until the worker lands.
fn main() {
    eprintln!("ferry-worker: not built yet");
    std::process::exit(2);
}
