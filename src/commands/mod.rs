pub mod bench;
pub mod doctor;
pub mod eval;
pub mod export;
pub mod finetune;
pub mod inspect;
pub mod model;
pub mod transcribe;
