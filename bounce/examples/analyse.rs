//! Prints the full analysis of each file given, for looking into one bounce by hand.

fn main() {
    for path in std::env::args().skip(1) {
        match std::fs::read(&path) {
            Ok(data) => println!("{path}: {:#?}", mailfarm_bounce::analyse(&data)),
            Err(e) => eprintln!("{path}: {e}"),
        }
    }
}
