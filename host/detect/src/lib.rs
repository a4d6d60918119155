//! Sigma detection for Qila (being written).
