pub mod bench;
pub mod doctor;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod listen;
pub mod model;
pub mod transcribe;
