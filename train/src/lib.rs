//! On-device CTC fine-tuning (issue: on-device fine-tuning). Not implemented yet.
