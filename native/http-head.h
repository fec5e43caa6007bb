// HTTP/1.1 response handling for the pipe's HTTP exchanges (pipe.cc): the backend's response head is
// checked and rewritten for the client, and its body is re-framed, with the rules of the JavaScript
// path (src/proxy/response-reader.ts, headers.ts and client-exchange.ts):
// - interim 1xx responses are skipped;
// - hop-by-hop fields (RFC 9110 section 7.6.1) and any field named in Connection are dropped;
// - a Date is added when the backend sent none;
// - a body of unknown length (chunked, or ending at the close) is re-chunked for the client, with
//   chunk extensions and trailers dropped;
// - a malformed head, content length or chunk makes the response bad.
// The client is an HTTP/1.1 one (others are served by JavaScript).

#ifndef ROOMRING_HTTP_HEAD_H_
#define ROOMRING_HTTP_HEAD_H_

#include <time.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace roomring_http {

/** How a response body is delimited. */
enum class Framing { kNone, kLength, kChunked, kClose };

/** Where a response head in [p, p+n) ends: the index past its CRLF CRLF, or 0. */
inline size_t HeadEnd(const char* p, size_t n) {
  const void* found = memmem(p, n, "\r\n\r\n", 4);
  return found == nullptr ? 0 : static_cast<size_t>(static_cast<const char*>(found) - p) + 4;
}

inline char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

/** Whether [p, p+n) is `lower` (lower-case), ignoring the case of letters. */
inline bool IsName(const char* p, size_t n, const char* lower) {
  size_t length = strlen(lower);
  if (n != length) return false;
  for (size_t i = 0; i < n; i++) {
    if (Lower(p[i]) != lower[i]) return false;
  }
  return true;
}

inline bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }

/** The comma-separated tokens of a field value, trimmed and lower-cased. */
inline std::vector<std::string> Tokens(const char* p, size_t n) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i < n && p[i] != ',') continue;
    size_t a = start;
    size_t b = i;
    while (a < b && IsSpace(p[a])) a++;
    while (b > a && IsSpace(p[b - 1])) b--;
    std::string token;
    for (size_t k = a; k < b; k++) token.push_back(Lower(p[k]));
    out.push_back(token);
    start = i + 1;
  }
  return out;
}

/** Fields never passed on, whatever Connection names. */
inline bool IsHopByHop(const char* name, size_t n) {
  if (n >= 5 && IsName(name, 5, "proxy") && (n == 5 || name[5] == '-')) return true;
  return IsName(name, n, "te") || IsName(name, n, "trailer") || IsName(name, n, "upgrade") ||
         IsName(name, n, "connection") || IsName(name, n, "keep-alive") || IsName(name, n, "transfer-encoding");
}

/** The IMF-fixdate of this second (RFC 9110 section 5.6.7), for responses that come without a Date. */
inline const std::string& HttpDate() {
  static thread_local time_t second = 0;
  static thread_local std::string text;
  time_t now = time(nullptr);
  if (now == second) return text;
  second = now;
  struct tm tm;
  gmtime_r(&now, &tm);
  static const char* const kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char buffer[40];
  snprintf(buffer, sizeof buffer, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday], tm.tm_mday,
           kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  text = buffer;
  return text;
}

/** A response head as read, and what the client gets. */
struct ResponseHead {
  int status = 0;
  /** Whether the backend connection may carry another request after this response. */
  bool keepAlive = false;
  Framing framing = Framing::kNone;
  uint64_t length = 0;
};

/**
 * Reads the response head in [p, p+n) (ending with CRLF CRLF) and, unless it is an interim one,
 * appends the client's head to `out`. `noBody`: the request was HEAD; `clientKeepAlive`: the
 * client's connection stays open after this response. False for a malformed head.
 */
inline bool RewriteHead(const char* p, size_t n, bool noBody, bool clientKeepAlive, ResponseHead* head,
                        std::string* out) {
  if (n < 16 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ') return false;
  int status = 0;
  for (size_t i = 9; i < 12; i++) {
    if (p[i] < '0' || p[i] > '9') return false;
    status = status * 10 + (p[i] - '0');
  }
  const char* eol = static_cast<const char*>(memmem(p, n, "\r\n", 2));
  size_t lineEnd = static_cast<size_t>(eol - p);
  if (lineEnd != 12 && p[12] != ' ') return false;
  head->status = status;
  // Interim responses (100 Continue, 103 Early Hints) are not the answer: the caller reads on.
  if (status >= 100 && status < 200) return true;
  struct Field {
    size_t name, nameLength, value, valueLength;
  };
  // Kept between calls: no allocation per response.
  static thread_local std::vector<Field> fields;
  fields.clear();
  bool close = p[7] == '0';
  bool chunked = false;
  bool hasLength = false;
  uint64_t length = 0;
  bool dated = false;
  std::vector<std::string> listed;
  size_t pos = lineEnd + 2;
  size_t end = n - 2;  // the final CRLF
  while (pos < end) {
    const char* lineStop = static_cast<const char*>(memmem(p + pos, n - pos, "\r\n", 2));
    size_t stop = static_cast<size_t>(lineStop - p);
    const char* colonAt = static_cast<const char*>(memchr(p + pos, ':', stop - pos));
    if (colonAt == nullptr || colonAt == p + pos) return false;
    size_t colon = static_cast<size_t>(colonAt - p);
    size_t a = colon + 1;
    size_t b = stop;
    while (a < b && IsSpace(p[a])) a++;
    while (b > a && IsSpace(p[b - 1])) b--;
    Field field{pos, colon - pos, a, b - a};
    const char* name = p + pos;
    const char* value = p + a;
    if (IsName(name, field.nameLength, "content-length")) {
      // At most 2^53 - 1, as the JavaScript reader takes.
      if (field.valueLength == 0 || field.valueLength > 16) return false;
      uint64_t v = 0;
      for (size_t i = 0; i < field.valueLength; i++) {
        if (value[i] < '0' || value[i] > '9') return false;
        v = v * 10 + static_cast<uint64_t>(value[i] - '0');
      }
      if (v > 9007199254740991ULL || (hasLength && v != length)) return false;
      hasLength = true;
      length = v;
    } else if (IsName(name, field.nameLength, "transfer-encoding")) {
      // Chunked alone: another coding (gzip, say) would reach the client undeclared, since the
      // field is this hop's, and a body not ending in chunked has no length this proxy can use.
      std::vector<std::string> codings = Tokens(value, field.valueLength);
      if (chunked || codings.size() != 1 || codings[0] != "chunked") return false;
      chunked = true;
    } else if (IsName(name, field.nameLength, "connection")) {
      for (const std::string& token : Tokens(value, field.valueLength)) {
        if (token == "close") close = true;
        else if (!token.empty() && token != "keep-alive" && token != "upgrade") listed.push_back(token);
      }
    } else if (IsName(name, field.nameLength, "date")) {
      dated = true;
    }
    fields.push_back(field);
    pos = stop + 2;
  }
  bool bodiless = noBody || status == 204 || status == 304;
  Framing framing = bodiless ? Framing::kNone
                    : chunked ? Framing::kChunked
                    : hasLength ? Framing::kLength
                                : Framing::kClose;
  if (framing == Framing::kClose) close = true;
  head->keepAlive = !close;
  head->framing = framing;
  head->length = length;
  bool unknownLength = framing == Framing::kChunked || framing == Framing::kClose;
  bool lengthWritten = false;
  out->append("HTTP/1.1 ");
  out->append(p + 9, 3);
  out->push_back(' ');
  if (lineEnd > 13) out->append(p + 13, lineEnd - 13);
  out->append("\r\n");
  for (const Field& field : fields) {
    const char* name = p + field.name;
    if (IsHopByHop(name, field.nameLength)) continue;
    if (IsName(name, field.nameLength, "content-length")) {
      // Void beside chunking (RFC 9112 6.3); repeats, all equal, are sent once.
      if (unknownLength || lengthWritten) continue;
      lengthWritten = true;
    }
    bool named = false;
    for (const std::string& token : listed) {
      if (IsName(name, field.nameLength, token.c_str())) named = true;
    }
    if (named) continue;
    out->append(name, field.nameLength);
    out->append(": ");
    out->append(p + field.value, field.valueLength);
    out->append("\r\n");
  }
  if (!dated) {
    out->append("Date: ");
    out->append(HttpDate());
    out->append("\r\n");
  }
  if (unknownLength) out->append("Transfer-Encoding: chunked\r\n");
  if (!clientKeepAlive) out->append("Connection: close\r\n");
  out->append("\r\n");
  return true;
}

/** Appends `n` body bytes as one chunk for the client. */
inline void AppendChunk(const char* p, size_t n, std::string* out) {
  if (n == 0) return;
  char size[24];
  int written = snprintf(size, sizeof size, "%zx\r\n", n);
  out->append(size, static_cast<size_t>(written));
  out->append(p, n);
  out->append("\r\n");
}

/** The chunk that ends a re-chunked body. */
constexpr const char* kLastChunk = "0\r\n\r\n";

/**
 * Reads a chunked body as it comes: its data goes to the client as chunks of its own, its sizes,
 * extensions and trailers are read and dropped.
 */
class Dechunker {
 public:
  enum class Result { kMore, kDone, kBad };

  /** Takes the bytes [p, p+n); `*used` is how many belong to the body (less once it is complete). */
  Result Feed(const char* p, size_t n, std::string* out, size_t* used) {
    size_t i = 0;
    while (i < n) {
      switch (state_) {
        case State::kSize:
        case State::kTrailer: {
          const char* nl = static_cast<const char*>(memchr(p + i, '\n', n - i));
          size_t stop = nl == nullptr ? n : static_cast<size_t>(nl - p);
          line_.append(p + i, stop - i);
          if (line_.size() > kMaxLine) return Result::kBad;
          if (nl == nullptr) {
            i = n;
            break;
          }
          i = stop + 1;
          if (line_.empty() || line_.back() != '\r') return Result::kBad;
          line_.pop_back();
          if (state_ == State::kTrailer) {
            bool last = line_.empty();
            line_.clear();
            if (last) {
              state_ = State::kDone;
              *used = i;
              return Result::kDone;
            }
            break;
          }
          // Spaces around the size are allowed, as the JavaScript reader trims them.
          size_t first = 0;
          while (first < line_.size() && (line_[first] == ' ' || line_[first] == '\t')) first++;
          line_.erase(0, first);
          size_t digits = 0;
          uint64_t size = 0;
          while (digits < line_.size() && digits < 14) {
            char c = line_[digits];
            int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (v < 0) break;
            size = size * 16 + static_cast<uint64_t>(v);
            digits++;
          }
          // Hex digits (at most 13), then nothing, spaces or an extension.
          size_t rest = digits;
          while (rest < line_.size() && (line_[rest] == ' ' || line_[rest] == '\t')) rest++;
          if (digits == 0 || digits > 13 || (rest < line_.size() && line_[rest] != ';')) return Result::kBad;
          line_.clear();
          remaining_ = size;
          state_ = size == 0 ? State::kTrailer : State::kData;
          break;
        }
        case State::kData: {
          size_t take = n - i < remaining_ ? n - i : static_cast<size_t>(remaining_);
          AppendChunk(p + i, take, out);
          remaining_ -= take;
          i += take;
          if (remaining_ == 0) state_ = State::kDataEnd;
          break;
        }
        case State::kDataEnd: {
          line_.push_back(p[i++]);
          if (line_.size() < 2) break;
          if (line_[0] != '\r' || line_[1] != '\n') return Result::kBad;
          line_.clear();
          state_ = State::kSize;
          break;
        }
        case State::kDone:
          *used = i;
          return Result::kDone;
      }
    }
    *used = n;
    return Result::kMore;
  }

 private:
  enum class State { kSize, kData, kDataEnd, kTrailer, kDone };
  static constexpr size_t kMaxLine = 64 * 1024;
  State state_ = State::kSize;
  uint64_t remaining_ = 0;
  std::string line_;
};

}  // namespace roomring_http

#endif  // ROOMRING_HTTP_HEAD_H_
