pub mod dns;
pub mod postfix;
