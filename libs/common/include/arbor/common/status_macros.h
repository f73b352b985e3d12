// Early-return helpers for absl::Status / absl::StatusOr<T>.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define ARBOR_STATUS_CONCAT_INNER_(a, b) a##b
#define ARBOR_STATUS_CONCAT_(a, b) ARBOR_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define ARBOR_RETURN_IF_ERROR(expr)                \
  do {                                             \
    ::absl::Status arbor_status_ = (expr);         \
    if (!arbor_status_.ok()) return arbor_status_; \
  } while (0)

// `ARBOR_ASSIGN_OR_RETURN(auto x, MakeX());` binds the value or returns the error.
#define ARBOR_ASSIGN_OR_RETURN(lhs, rexpr) \
  ARBOR_ASSIGN_OR_RETURN_IMPL_(ARBOR_STATUS_CONCAT_(arbor_statusor_, __LINE__), lhs, rexpr)

#define ARBOR_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = *std::move(statusor)
