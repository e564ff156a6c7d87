//! Out-of-distribution test sets. Filled in by the OOD work.
