//! One module per CNI verb.

