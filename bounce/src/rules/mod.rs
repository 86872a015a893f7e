//! The wording rules of the classifier: the phrases MTAs and providers write, per reason, in
//! priority order. Kept apart from the matching logic (`classify.rs`) because it is data that
//! grows with every new bounce format met, and is reviewed as such: `specific.rs` holds each
//! reason's phrases, `weak.rs` the phrases that only hint (a phrase listed in both is a weak
//! match of its reason).

mod specific;
mod weak;

pub(crate) use specific::RULES;
pub(crate) use weak::{DEFINITIVE_UNKNOWN, WEAK, WEAK_OFFSET};
