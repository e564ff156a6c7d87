//! Report rendering (plots). Filled in by the plots work.
