//! The SIEM service for Qila (being written).
