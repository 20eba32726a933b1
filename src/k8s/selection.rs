//! The network selection annotation grammar.
