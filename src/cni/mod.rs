//! CNI wire types and version conversion.

