#include "stages/schema/tape.h"

namespace evpipe::stages::schema::tape {

bool equal(view a, size_t ai, view b, size_t bi) noexcept {
  const char ta = type_at(a, ai), tb = type_at(b, bi);
  if (is_number(ta) || is_number(tb)) {
    if (!(is_number(ta) && is_number(tb))) return false;
    if (ta != 'd' && tb != 'd') {
      // simdjson uses 'u' only above INT64_MAX, so an 'l' never equals a 'u'.
      return ta == tb && a.words[ai + 1] == b.words[bi + 1];
    }
    return number_at(a, ai) == number_at(b, bi);
  }
  if (ta != tb) return false;  // also tells true from false
  switch (ta) {
    case '"': return string_at(a, ai) == string_at(b, bi);
    case '[': {
      if (count(a, ai) != count(b, bi)) return false;
      for (size_t i = ai + 1, j = bi + 1, end = scope_end(a, ai) - 1; i < end; i = after(a, i), j = after(b, j)) {
        if (!equal(a, i, b, j)) return false;
      }
      return true;
    }
    case '{': {
      if (count(a, ai) != count(b, bi)) return false;
      for (size_t k = ai + 1, end = scope_end(a, ai) - 1; k < end; k = after(a, k + 1)) {
        const size_t other = member(b, bi, string_at(a, k));
        if (other == 0 || !equal(a, k + 1, b, other)) return false;
      }
      return true;
    }
    default: return true;  // null, true, false: the type says it all
  }
}

}  // namespace evpipe::stages::schema::tape
