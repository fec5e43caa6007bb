// The native pipe (Linux): WebSocket tunnels, the proxy's accepts, and bodiless HTTP requests.
//
// Tunnels: after a backend has answered an upgrade with
// 101, both TCP sockets are handed here and forwarded with epoll, one read and one write per
// chunk, no JavaScript and no allocation while the peer keeps up.
//
// Semantics are those of the JavaScript tunnel (src/proxy/tunnel.ts):
// - bytes flow both ways; an end whose peer cannot take more is not read (back-pressure);
// - a FIN is passed on (shutdown SHUT_WR) once what was queued for that side is written;
// - when the backend has ended and the client has everything, the backend socket closes and the
//   client's lingers: what it still sends is read and dropped until its FIN (or kLingerMs), so
//   closing never resets a connection whose last bytes are still on their way;
// - a socket error ends the tunnel: what the backend sent before it still reaches the client;
// - `idleMs` without a byte read or written on either side closes it;
// - closeWith() writes a last frame to each side, ends both, drops what arrives, and closes when
//   the client has ended or the grace time has passed.
// A tunnel may also start before its backend connection exists (connect()): the pipe connects,
// sends the handshake, and forwards from then on; a connection that fails or times out, and a
// backend that does not answer within its time, give the client socket back to JavaScript
// (which fails over or answers the client), and nothing is closed on it.
//
// The pipe may also accept the clients of the proxy's listening socket (listen()): it reads each
// connection until its next request head is complete, then hands the descriptor and the bytes
// read to JavaScript. The descriptor stays registered here, parked, until JavaScript says what
// it does with it: routes an upgrade straight back with connect() (no Node socket is ever made
// for it), gives a bodiless HTTP request back with exchange(), or takes the connection for a
// Node socket (release()). A connection silent past its idle time is closed; one whose head is
// not complete within its head time, or is larger than kMaxHead, is handed over as it is, for
// JavaScript to answer.
//
// HTTP exchanges (exchange(), forward(), reply()): JavaScript routes the request and writes the
// head the backend gets; the pipe sends it on an idle pooled connection to that backend (or a
// new one), rewrites the response head for the client and re-frames its body (http-head.h),
// pools the backend connection once the response is read, and reads the client's next head. An
// attempt that fails before the response begins goes back to JavaScript, which fails over
// (forward()) or answers (reply()), as on its own path.
//
// What happens is reported to JavaScript in batches (see Threads below): closed, connected,
// answered (with the status), the two hand-backs above, accepted connections, and exchanges
// failed or done.
//
// Threads: the pipe is two loops of the same code (class Pipe). The main loop runs on Node's main
// thread, driven by Node's event loop (a uv_poll on its epoll descriptor, and a timer for the
// sweeps): it accepts, connects, forwards new tunnels and the HTTP exchanges, and reports to
// JavaScript by calling it directly, so an upgrade or a request costs no wake-up of another thread. A tunnel open for moveAfter() moves,
// at its next activity or the next idle sweep, to the worker loop on the pipe thread, which
// forwards the long-lived ones beside JavaScript and reports through a thread-safe function.
// JavaScript's calls only queue commands, always to the main loop, which passes those for a moved
// tunnel on behind it; each loop owns the tunnels and file descriptors it holds.

#include <node_api.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "http-head.h"

namespace {

constexpr size_t kReadSize = 64 * 1024;
constexpr int kMaxEvents = 256;
constexpr int kClient = 0;
constexpr int kUpstream = 1;
/** How long a finished tunnel's client may keep sending before its socket is closed anyway. */
constexpr int64_t kLingerMs = 5000;
/** Bytes of a new connection read at most while its first head is awaited (llhttp's limit is 16 KiB). */
constexpr size_t kMaxHead = 16 * 1024;
/** Connections accepted at most per readiness of a listening socket, so tunnels are not starved. */
constexpr int kAcceptBurst = 64;
/** How long a listening socket rests when the process is out of descriptors. */
constexpr int64_t kAcceptRestMs = 100;
/** How much sooner than its period a sweep may run (timers fire on the loop's cached time). */
constexpr int64_t kSweepSlackMs = 10;
/** The epoll interest of a client connection between exchanges and in one. */
constexpr uint32_t kClientEvents = EPOLLIN | EPOLLRDHUP;
/**
 * How long a tunnel stays open after one side's FIN was passed on while the other side has not
 * ended (0: no limit; halfCloseAfter()). One value for both loops, read at each idle sweep.
 */
std::atomic<int64_t> gHalfCloseMs{30000};

int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

struct Tunnel;

/** What an epoll registration points at (the eventfd's is null). */
enum class Watch { kEnd, kListener, kIncoming, kUpstream };

struct Watched {
  explicit Watched(Watch w) : watch(w) {}
  Watch watch;
};

struct End : Watched {
  End() : Watched(Watch::kEnd) {}
  Tunnel* tunnel = nullptr;
  int side = 0;
  int fd = -1;          // -1 once closed
  bool watched = false;  // registered in epoll
  std::string pending;   // bytes read from the peer that this socket has not taken yet
  size_t offset = 0;
  bool eof = false;      // this socket sent its FIN (or failed): nothing more comes from it
  bool shut = false;     // our FIN was sent to this socket (or it failed): nothing more goes to it
  uint32_t events = 0;   // the epoll interest registered now
};

struct Tunnel {
  uint64_t id = 0;
  End ends[2];
  int64_t idleMs = 0;
  int64_t lastActive = 0;
  // Closing: reads are dropped, the tunnel ends when the client has ended or at the deadline.
  bool closing = false;
  int64_t deadline = 0;
  bool dead = false;
  // Started by connect(): the backend connection is being opened (until `connectDeadline`, 0 for
  // none), then its first bytes are awaited (until `answerDeadline`, 0 for none).
  bool connecting = false;
  bool answered = true;
  // The backend answered otherwise than 101 (a 404, say): no WebSocket. Its answer still reaches
  // the client, but nothing more the client sends goes to the backend, which gets our FIN.
  bool refused = false;
  // When one side's FIN was passed on while the other side stayed open (0: not yet).
  int64_t halfClosedAt = 0;
  int64_t connectDeadline = 0;
  int64_t answerMs = 0;
  int64_t answerDeadline = 0;
  struct sockaddr_storage address = {};
  socklen_t addressLength = 0;
  // When the pipe took it, and whether it is to move to the pipe thread at the end of this round.
  int64_t since = 0;
  bool moving = false;

  Tunnel() {
    for (int side = 0; side < 2; side++) {
      ends[side].tunnel = this;
      ends[side].side = side;
    }
  }
};

/** A listening socket whose connections the pipe accepts. */
struct Listener : Watched {
  Listener() : Watched(Watch::kListener) {}
  uint64_t id = 0;
  int fd = -1;
  bool watched = false;
  int64_t restUntil = 0;  // out of descriptors: not watched until then
  int64_t headMs = 0;     // time from a connection's first byte to the end of its head (0: none)
  int64_t idleMs = 0;     // time a connection may stay silent before its first byte
  int64_t sendMs = 0;     // time a client may take none of a response waiting for it (0: none)
  bool dead = false;
};

struct Exchange;

/**
 * A client connection the pipe accepted: its next request head is being read; or it is parked
 * (the head went to JavaScript, which owns the descriptor until it gives it back with exchange()
 * or takes it with release(); the epoll registration stays, so a connection that comes back costs
 * no epoll_ctl); or it is in an HTTP exchange; or it lingers after its last response.
 */
struct Incoming : Watched {
  Incoming() : Watched(Watch::kIncoming) {}
  Listener* listener = nullptr;  // null once the listener is gone: closed after its exchange
  int fd = -1;
  bool watched = false;
  uint32_t events = 0;  // the epoll interest registered now
  std::string bytes;
  int64_t deadline = 0;  // 0: none
  std::string ip;
  int port = 0;
  bool parked = false;
  Exchange* exchange = nullptr;
  bool lingering = false;
  bool dead = false;
};

/** A backend connection of the HTTP exchanges: in use by one, or idle in the pool. */
struct Upstream : Watched {
  Upstream() : Watched(Watch::kUpstream) {}
  Exchange* exchange = nullptr;  // null while pooled
  int fd = -1;
  bool watched = false;
  uint32_t events = 0;
  std::string key;    // the backend's address, which the pool is kept by
  int64_t since = 0;  // pooled since
  bool dead = false;
};

/** Failure codes of an exchange's attempt besides errno values. */
constexpr int kConnectTimedOut = -1;
constexpr int kResponseTimedOut = -2;
constexpr int kBadResponse = -3;
/**
 * How many ended exchanges are kept for reuse, and the largest buffer one keeps (a read's worth of
 * body with its head: a response larger than that leaves its buffer behind).
 */
constexpr size_t kSpareExchanges = 128;
constexpr size_t kSpareBuffer = kReadSize + 4096;
/** How large a backend's response head may grow (as the JavaScript reader allows). */
constexpr size_t kMaxResponseHead = 64 * 1024;

/**
 * One HTTP request the pipe forwards for JavaScript (exchange()): JavaScript chose the backend and
 * wrote the head; the pipe sends it on a pooled or new backend connection, rewrites the response
 * head for the client, re-frames the body, and returns both connections to their pools.
 */
struct Exchange {
  uint64_t id = 0;
  Incoming* client = nullptr;
  Upstream* upstream = nullptr;
  // The request.
  std::string head;
  size_t headSent = 0;
  struct sockaddr_storage address = {};
  socklen_t addressLength = 0;
  std::string key;
  bool noBody = false;     // a HEAD request
  bool keepAlive = false;  // the client's connection stays open after the response
  bool retriable = false;  // idempotent, without a body: sent again once after a stale pooled connection
  int64_t connectMs = 0;
  int64_t responseMs = 0;
  int64_t idleMs = 0;
  // The attempt under way.
  bool attempting = false;
  bool reused = false;
  bool connecting = false;
  bool sent = false;
  bool bytesRead = false;
  bool resent = false;
  int64_t lastActive = 0;
  // The response.
  std::string response;  // its head, as far as it came
  roomring_http::ResponseHead parsed;
  roomring_http::Dechunker dechunker;
  uint64_t remaining = 0;
  bool responded = false;  // the client's head is written or queued
  bool complete = false;   // everything for the client is in `out` or written
  bool clean = true;       // the backend sent nothing past the response
  bool replying = false;   // JavaScript's answer, without a backend
  std::string out;         // for the client, not written yet
  size_t outOffset = 0;
  bool dead = false;
};

/** What is reported to JavaScript. */
enum EventKind : int {
  kClosed = 0,
  kConnected = 1,
  kAnswered = 2,        // a: the status code of the backend's first line (0 if it is none)
  kConnectFailed = 3,   // a: errno (0: the connect deadline passed), b: the client fd, now JavaScript's
  kAnswerTimedOut = 4,  // b: the client fd, now JavaScript's
  // id: the listener; a: the peer's port; b: the connection's fd, now JavaScript's; with the bytes
  // read and the peer's address. kIncoming: a whole head (or kMaxHead bytes) was read;
  // kIncomingLate: the head was not complete within the listener's head time.
  kIncoming = 5,
  kIncomingLate = 6,
  // The main loop stopped: b is the listening socket, still listening, JavaScript's again.
  kListenerBack = 7,
  // An HTTP exchange is over (answered, abandoned, or its client gone): a is the backend's status (0: none).
  kExchangeDone = 8,
  // An attempt of an exchange failed before its response began, and the exchange waits for
  // forward() or reply(): a is errno or a failure code (kConnectTimedOut...), b has bit 1 for a
  // connection that was open, bit 2 for a pooled one that failed before sending anything.
  kExchangeFailed = 9,
};

struct Event {
  uint64_t id;
  int kind;
  int64_t a;
  int64_t b;
  std::string bytes;  // kIncoming, kIncomingLate
  std::string ip;
};

/** Whether an event hands a descriptor to JavaScript (in b). */
bool HandsFd(int kind) {
  return kind == kConnectFailed || kind == kAnswerTimedOut || kind == kIncoming || kind == kIncomingLate ||
         kind == kListenerBack;
}

// kAdopt: a tunnel that moves from the main thread's loop to the pipe thread's.
// kExchange, kForward, kReply, kDropPool: the HTTP exchanges (main loop only).
enum class CommandKind {
  kAdd,
  kConnect,
  kCloseWith,
  kDestroy,
  kListen,
  kUnlisten,
  kLimits,
  kAdopt,
  kExchange,
  kForward,
  kReply,
  kDropPool,
};

struct Command {
  CommandKind kind = CommandKind::kAdd;
  Tunnel* tunnel = nullptr;      // kAdd, kConnect, kAdopt
  Listener* listener = nullptr;  // kListen
  uint64_t id = 0;
  std::string toClient;
  std::string toUpstream;
  int64_t graceMs = 0;
  int64_t headMs = 0;  // kLimits
  int64_t idleMs = 0;  // kLimits
  int64_t sendMs = 0;  // kLimits
  // kExchange: the client's descriptor (the rest of its bytes in toClient) and its request.
  int fd = -1;
  bool noBody = false;
  bool retriable = false;
  bool keepAlive = false;  // kExchange, kReply
  // kForward: the backend and the limits (the head in toUpstream; idleMs above).
  struct sockaddr_storage address = {};
  socklen_t addressLength = 0;
  int64_t connectMs = 0;
  int64_t responseMs = 0;
  int64_t poolMs = 0;
};

/** Whether a command carries a tunnel that is its own until the pipe takes it. */
bool OwnsTunnel(CommandKind kind) {
  return kind == CommandKind::kAdd || kind == CommandKind::kConnect || kind == CommandKind::kAdopt;
}

/**
 * One event loop of the pipe. The main one runs on Node's main thread: Node's event loop watches
 * its epoll descriptor, so accepting, reading heads, connecting and the first moments of a tunnel
 * cost no wake-up of another thread. A tunnel that has been open for `moveAfterMs_` moves, at its
 * next activity or the next idle sweep, to a second loop on a thread of its own (the worker),
 * where its bytes are forwarded beside JavaScript rather than between its callbacks.
 */
class Pipe {
 public:
  Pipe(napi_env env, napi_value onClosed, bool threaded) : env_(env), threaded_(threaded) {
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    wake_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epoll_ < 0 || wake_ < 0) return;
    struct epoll_event ev = {};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;
    epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_, &ev);
    napi_value name;
    napi_create_string_utf8(env, "roomring pipe events", NAPI_AUTO_LENGTH, &name);
    if (threaded_) {
      napi_create_threadsafe_function(env, onClosed, nullptr, name, 0, 1, nullptr, nullptr, this, CallJs,
                                      &closed_);
      // The pipe does not keep the process alive by itself: JavaScript holds a handle while tunnels
      // are open (native-pipe.ts).
      napi_unref_threadsafe_function(env, closed_);
      thread_ = std::thread([this] { Run(); });
      return;
    }
    // On the main thread: Node's event loop watches the pipe's epoll descriptor, and a timer runs
    // the sweeps. Neither keeps the process alive.
    napi_create_reference(env, onClosed, 1, &callback_);
    napi_async_init(env, nullptr, name, &async_);
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    poll_ = new uv_poll_t();
    poll_->data = this;
    if (uv_poll_init(loop, poll_, epoll_) != 0) {
      delete poll_;
      poll_ = nullptr;
      return;
    }
    uv_poll_start(poll_, UV_READABLE, [](uv_poll_t* handle, int, int) {
      static_cast<Pipe*>(handle->data)->Turn();
    });
    uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
    timer_ = new uv_timer_t();
    timer_->data = this;
    uv_timer_init(loop, timer_);
    ArmTimer(false);
    uv_unref(reinterpret_cast<uv_handle_t*>(timer_));
  }

  ~Pipe() {
    // The pipe thread's loop goes first: it may still hold tunnels this loop gave it.
    delete worker_;
    stop_.store(true);
    if (thread_.joinable()) {
      Wake();
      thread_.join();
    }
    StopHandles();
    for (auto& entry : tunnels_) {
      for (End& end : entry.second->ends) CloseFd(&end);
      delete entry.second;
    }
    for (Incoming* in : incomings_) {
      // A parked connection's descriptor is JavaScript's.
      if (in->fd >= 0 && !in->parked) close(in->fd);
      delete in;
    }
    for (auto& entry : exchanges_) {
      if (entry.second->upstream != nullptr) {
        close(entry.second->upstream->fd);
        delete entry.second->upstream;
      }
      delete entry.second;
    }
    for (auto& entry : pool_) {
      for (Upstream* u : entry.second) {
        close(u->fd);
        delete u;
      }
    }
    for (auto& entry : listeners_) {
      if (entry.second->fd >= 0) close(entry.second->fd);
      delete entry.second;
    }
    for (Command& c : commands_) {
      if (OwnsTunnel(c.kind)) {
        for (End& end : c.tunnel->ends) CloseFd(&end);
        delete c.tunnel;
      } else if (c.kind == CommandKind::kListen) {
        close(c.listener->fd);
        delete c.listener;
      } else if (c.kind == CommandKind::kExchange && parked_.count(c.fd) == 0) {
        close(c.fd);
      }
    }
    DropEvents(reported_);
    for (Tunnel* t : graveyard_) delete t;
    for (Exchange* ex : deadExchanges_) delete ex;
    for (Exchange* ex : spareExchanges_) delete ex;
    for (Upstream* u : deadUpstreams_) delete u;
    for (Incoming* in : deadIncomings_) delete in;
    for (Listener* l : deadListeners_) delete l;
    if (closed_ != nullptr) napi_release_threadsafe_function(closed_, napi_tsfn_abort);
    if (callback_ != nullptr) napi_delete_reference(env_, callback_);
    if (async_ != nullptr) napi_async_destroy(env_, async_);
    if (wake_ >= 0) close(wake_);
    if (epoll_ >= 0) close(epoll_);
  }

  bool ok() const { return epoll_ >= 0 && wake_ >= 0 && (threaded_ || poll_ != nullptr); }

  /** Whether this loop still runs (it stops only when epoll fails). */
  bool working() const { return !broken_.load(); }

  /** Queues a command for this loop; false (nothing queued) once the loop has stopped. */
  bool Push(Command command) {
    // The main loop has stopped: the tunnels it gave the worker still take their commands there.
    if (worker_ != nullptr && broken_.load() && movedOut_.count(command.id) > 0)
      return worker_->Push(std::move(command));
    bool first;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (broken_.load()) return false;
      first = commands_.empty();
      commands_.push_back(std::move(command));
    }
    // Commands queued behind the first are taken with it: one wake-up. Inside the main loop's events
    // callback there is none: the commands it gives (a connect per accepted upgrade) are taken when
    // it returns.
    if (first) {
      if (inCallback_) wakeAfterCallback_ = true;
      else Wake();
    }
    return true;
  }

  uint64_t NextId() { return ++lastId_; }

  /** Makes `worker` (a threaded loop) the one this main loop moves its long-lived tunnels to. */
  void Pair(Pipe* worker) {
    worker_ = worker;
    worker->main_ = this;
  }

  /** How long a tunnel stays in the main loop before it moves to the worker (-1: never). */
  void SetMoveAfter(int64_t ms) { moveAfterMs_ = ms; }

  /** release(): JavaScript takes a parked connection's descriptor (main thread, outside a round). */
  void TakeParked(int fd) { Release(fd); }

 private:
  /**
   * Calls JavaScript with the events as one Float64Array (id, kind, a, b for each) and, for each
   * accepted connection among them in turn, its peer's address and the length of its bytes, which
   * follow one another in one Buffer (one allocation per batch rather than per connection).
   */
  static void CallJs(napi_env env, napi_value callback, void* context, void* data) {
    auto* events = static_cast<std::vector<Event>*>(data);
    auto* pipe = static_cast<Pipe*>(context);
    if (env == nullptr || callback == nullptr) {
      DropEvents(events);
      return;
    }
    // The four numbers of each event go in one Float64Array: two N-API calls for the batch.
    napi_value array;
    napi_value payloads;
    napi_value numbers;
    double* into4 = nullptr;
    if (napi_create_arraybuffer(env, events->size() * 4 * sizeof(double), reinterpret_cast<void**>(&into4),
                                &numbers) != napi_ok ||
        napi_create_typedarray(env, napi_float64_array, events->size() * 4, numbers, 0, &array) != napi_ok) {
      DropEvents(events);
      return;
    }
    napi_create_array(env, &payloads);
    uint32_t i = 0;
    uint32_t p = 0;
    size_t total = 0;
    for (const Event& e : *events) total += e.bytes.size();
    napi_value all;
    char* into = nullptr;
    if (total > 0) napi_create_buffer(env, total, reinterpret_cast<void**>(&into), &all);
    else napi_get_undefined(env, &all);
    for (const Event& e : *events) {
      if (pipe->main_ != nullptr && e.kind == kClosed) pipe->main_->movedOut_.erase(e.id);
      into4[i++] = static_cast<double>(e.id);
      into4[i++] = static_cast<double>(e.kind);
      into4[i++] = static_cast<double>(e.a);
      into4[i++] = static_cast<double>(e.b);
      if (e.kind == kIncoming || e.kind == kIncomingLate) {
        napi_value ip;
        napi_value length;
        napi_create_string_latin1(env, e.ip.data(), e.ip.size(), &ip);
        napi_create_uint32(env, static_cast<uint32_t>(e.bytes.size()), &length);
        napi_set_element(env, payloads, p++, ip);
        napi_set_element(env, payloads, p++, length);
        if (into != nullptr) {
          memcpy(into, e.bytes.data(), e.bytes.size());
          into += e.bytes.size();
        }
      }
    }
    delete events;
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_value argv[3] = {array, payloads, all};
    pipe->inCallback_ = true;
    if (pipe->threaded_) {
      napi_call_function(env, undefined, callback, 3, argv, nullptr);
    } else {
      // From Node's event loop with no JavaScript on the stack: as any I/O callback, with the
      // microtasks and next ticks run after it, and a throw reported as uncaught.
      napi_value global;
      napi_get_global(env, &global);
      napi_make_callback(env, pipe->async_, global, callback, 3, argv, nullptr);
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (pending) {
        napi_value error;
        napi_get_and_clear_last_exception(env, &error);
        napi_fatal_exception(env, error);
      }
    }
    pipe->inCallback_ = false;
    if (pipe->wakeAfterCallback_) {
      pipe->wakeAfterCallback_ = false;
      if (pipe->threaded_) pipe->Wake();
      else pipe->commandsAfterCallback_ = true;
    }
  }

  /** Main-thread mode: one round of the pipe's work, then its events to JavaScript. */
  void Turn() {
    if (broken_.load()) return;
    if (!Round(0)) {
      StopHandles();
    }
    Deliver();
    ArmTimer(Timed());
  }

  /** Whether something is due within 100 ms: closing tunnels, deadlines, resting listeners. */
  bool Timed() const { return !closing_.empty() || !timed_.empty() || !exchanges_.empty() || resting_; }

  /**
   * Main-thread mode: hands the events of the round to JavaScript; commands its callback gave (a
   * connect per accepted upgrade) are carried out at once, with no wake-up, and so on until
   * nothing more is reported.
   */
  void Deliver() {
    if (reported_ == nullptr) return;
    napi_handle_scope scope;
    napi_open_handle_scope(env_, &scope);
    napi_value callback;
    napi_get_reference_value(env_, callback_, &callback);
    while (reported_ != nullptr) {
      auto* events = reported_;
      reported_ = nullptr;
      CallJs(env_, callback, this, events);
      if (commandsAfterCallback_) {
        commandsAfterCallback_ = false;
        now_ = NowMs();
        TakeCommands();
        Bury();
      }
    }
    napi_close_handle_scope(env_, scope);
  }

  void ArmTimer(bool fast) {
    if (timer_ == nullptr || (timerArmed_ && fast == timerFast_)) return;
    timerArmed_ = true;
    timerFast_ = fast;
    uint64_t ms = fast ? 100 : 1000;
    uv_timer_start(timer_, [](uv_timer_t* handle) { static_cast<Pipe*>(handle->data)->Turn(); }, ms, ms);
  }

  /** Main loop: Node's event loop stops watching it (the handles are freed once closed). */
  void StopHandles() {
    if (poll_ != nullptr) {
      uv_poll_stop(poll_);
      uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
      poll_ = nullptr;
    }
    if (timer_ != nullptr) {
      uv_timer_stop(timer_);
      uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
      timer_ = nullptr;
    }
  }

  /** Events that will never reach JavaScript: the sockets they hand over are closed. */
  static void DropEvents(std::vector<Event>* events) {
    if (events == nullptr) return;
    for (const Event& e : *events) {
      if (HandsFd(e.kind)) close(static_cast<int>(e.b));
    }
    delete events;
  }

  void Report(uint64_t id, int kind, int64_t a = 0, int64_t b = 0) {
    if (reported_ == nullptr) reported_ = new std::vector<Event>();
    reported_->push_back(Event{id, kind, a, b, std::string(), std::string()});
  }

  void Wake() {
    uint64_t one = 1;
    ssize_t written = write(wake_, &one, sizeof one);
    (void)written;
  }

  void Run() {
    pthread_setname_np(pthread_self(), "roomring-pipe");
    while (!stop_.load()) {
      if (!Round(Timed() ? 100 : 1000)) return;
    }
  }

  /** One wait for events (up to `timeout` ms) and the work they bring; false once epoll has failed. */
  bool Round(int timeout) {
    struct epoll_event events[kMaxEvents];
    int n = epoll_wait(epoll_, events, kMaxEvents, timeout);
    if (n < 0 && errno != EINTR) {
      // Nothing can be forwarded any more: every tunnel closes, queued ones too, and add()
      // refuses new ones.
      std::vector<Command> taken;
      {
        // Under the lock: a command is either taken here or refused by Push().
        std::lock_guard<std::mutex> lock(mutex_);
        broken_.store(true);
        taken.swap(commands_);
      }
      for (Command& c : taken) {
        if (OwnsTunnel(c.kind)) {
          tunnels_[c.tunnel->id] = c.tunnel;
          Close(c.tunnel);
        } else if (c.kind == CommandKind::kListen) {
          listeners_[c.listener->id] = c.listener;
        } else if (c.kind == CommandKind::kExchange) {
          // The connection JavaScript gave back closes, and its exchange is over.
          Release(c.fd);
          close(c.fd);
          Report(c.id, kExchangeDone, 0);
        }
      }
      std::vector<Tunnel*> all;
      for (auto& entry : tunnels_) all.push_back(entry.second);
      for (Tunnel* t : all) Close(t);
      // The listening sockets go back to JavaScript, open, for Node to accept on again.
      std::vector<uint64_t> listening;
      for (auto& entry : listeners_) listening.push_back(entry.first);
      for (uint64_t id : listening) Unlisten(id, true);
      std::vector<Exchange*> exchanges;
      for (auto& entry : exchanges_) exchanges.push_back(entry.second);
      for (Exchange* ex : exchanges) Abandon(ex);
      DropPool();
      Bury();
      return false;
    }
    now_ = NowMs();
    for (int i = 0; i < n; i++) {
      auto* watched = static_cast<Watched*>(events[i].data.ptr);
      if (watched == nullptr) {
        uint64_t count;
        ssize_t got = read(wake_, &count, sizeof count);
        (void)got;
        TakeCommands();
        continue;
      }
      // A socket closed earlier in this round may still have an event in it.
      if (watched->watch == Watch::kListener) {
        auto* listener = static_cast<Listener*>(watched);
        if (!listener->dead) Accept(listener);
      } else if (watched->watch == Watch::kIncoming) {
        auto* in = static_cast<Incoming*>(watched);
        if (!in->dead) ClientEvent(in, events[i].events);
      } else if (watched->watch == Watch::kUpstream) {
        auto* u = static_cast<Upstream*>(watched);
        if (!u->dead) UpstreamEvent(u, events[i].events);
      } else {
        auto* end = static_cast<End*>(watched);
        if (!end->tunnel->dead && end->fd >= 0) Handle(end, events[i].events);
      }
    }
    // A little slack: the main loop's timer may fire a millisecond short of its period.
    if ((!closing_.empty() || !timed_.empty() || !exchanges_.empty()) &&
        now_ - lastClosingSweep_ >= 100 - kSweepSlackMs) {
      lastClosingSweep_ = now_;
      SweepClosing();
      SweepDeadlines();
      SweepExchanges();
    }
    if (resting_ && now_ - lastRestSweep_ >= kAcceptRestMs - kSweepSlackMs) {
      lastRestSweep_ = now_;
      WakeListeners();
    }
    if (now_ - lastIdleSweep_ >= 1000 - kSweepSlackMs) {
      lastIdleSweep_ = now_;
      SweepIdle();
      SweepIncoming();
      SweepPool();
    }
    MoveOut();
    Bury();
    return true;
  }

  /**
   * Gives the tunnels marked in this round to the worker: out of this loop's epoll and maps, into
   * its command queue (one wake-up for all of them). If the worker has stopped, they stay.
   */
  void MoveOut() {
    if (moving_.empty()) return;
    std::vector<Tunnel*> moving;
    moving.swap(moving_);
    for (Tunnel* t : moving) {
      t->moving = false;
      if (t->dead || t->closing) continue;
      for (End& end : t->ends) Unwatch(&end);
      tunnels_.erase(t->id);
      movedOut_.insert(t->id);
      Command command;
      command.kind = CommandKind::kAdopt;
      command.tunnel = t;
      command.id = t->id;
      if (!worker_->Push(std::move(command))) {
        movedOut_.erase(t->id);
        tunnels_[t->id] = t;
        Update(t);
      }
    }
  }

  void TakeCommands() {
    std::vector<Command> taken;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      taken.swap(commands_);
    }
    for (Command& c : taken) {
      if (c.kind == CommandKind::kConnect) {
        // A parked connection's registration goes: the tunnel watches the descriptor itself.
        Release(c.tunnel->ends[kClient].fd);
        StartConnect(c.tunnel);
        continue;
      }
      if (c.kind == CommandKind::kExchange) {
        StartExchange(c);
        continue;
      }
      if (c.kind == CommandKind::kForward) {
        Forward(c);
        continue;
      }
      if (c.kind == CommandKind::kReply) {
        Reply(c);
        continue;
      }
      if (c.kind == CommandKind::kDropPool) {
        DropPool();
        continue;
      }
      if (c.kind == CommandKind::kListen) {
        listeners_[c.listener->id] = c.listener;
        WatchListener(c.listener);
        continue;
      }
      if (c.kind == CommandKind::kUnlisten) {
        Unlisten(c.id);
        continue;
      }
      if (c.kind == CommandKind::kLimits) {
        auto found = listeners_.find(c.id);
        if (found != listeners_.end()) {
          found->second->headMs = c.headMs;
          found->second->idleMs = c.idleMs;
          found->second->sendMs = c.sendMs;
        }
        continue;
      }
      if (c.kind == CommandKind::kAdd || c.kind == CommandKind::kAdopt) {
        // A moved tunnel keeps its age; one of its ends may be closed already (flushing its last
        // bytes to the client).
        Tunnel* t = c.tunnel;
        t->lastActive = now_;
        if (c.kind == CommandKind::kAdd) t->since = now_;
        tunnels_[t->id] = t;
        bool added = true;
        for (End& end : t->ends) {
          if (end.fd < 0) continue;
          struct epoll_event ev = {};
          ev.data.ptr = static_cast<Watched*>(&end);
          end.watched = epoll_ctl(epoll_, EPOLL_CTL_ADD, end.fd, &ev) == 0;
          added = added && end.watched;
        }
        if (added) Update(t);
        else Close(t);
        continue;
      }
      auto found = tunnels_.find(c.id);
      if (found == tunnels_.end()) {
        // Commands follow a tunnel that moved; the worker takes them after the tunnel itself.
        if (movedOut_.count(c.id) > 0) worker_->Push(std::move(c));
        continue;
      }
      if (found->second->dead) continue;
      Tunnel* t = found->second;
      // A tunnel still connecting has nothing to close gracefully.
      if (c.kind == CommandKind::kDestroy || t->connecting) {
        Close(t);
        continue;
      }
      StartClosing(t, c.graceMs);
      if (!t->ends[kClient].shut) t->ends[kClient].pending.append(c.toClient);
      if (!t->ends[kUpstream].shut) t->ends[kUpstream].pending.append(c.toUpstream);
      Update(t);
    }
  }

  /** Opens the backend connection of a tunnel from connect(); the client is not read until it is open. */
  void StartConnect(Tunnel* t) {
    t->lastActive = now_;
    t->since = now_;
    tunnels_[t->id] = t;
    End& upstream = t->ends[kUpstream];
    int fd = socket(t->address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      HandBack(t, kConnectFailed, errno);
      return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    upstream.fd = fd;
    if (connect(fd, reinterpret_cast<struct sockaddr*>(&t->address), t->addressLength) < 0 &&
        errno != EINPROGRESS) {
      HandBack(t, kConnectFailed, errno);
      return;
    }
    t->connecting = true;
    timed_.insert(t);
    // On loopback the TCP handshake is done within connect(): the request goes out at once,
    // without a round through epoll. Elsewhere that would mostly be a send refused with EAGAIN.
    if (IsLoopback(t->address) && SendHandshake(t)) return;
    struct epoll_event ev = {};
    ev.events = EPOLLOUT;
    ev.data.ptr = static_cast<Watched*>(&upstream);
    if (epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      HandBack(t, kConnectFailed, errno);
      return;
    }
    upstream.watched = true;
    upstream.events = EPOLLOUT;
  }

  static bool IsLoopback(const struct sockaddr_storage& address) {
    if (address.ss_family == AF_INET) {
      const auto* v4 = reinterpret_cast<const struct sockaddr_in*>(&address);
      return (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
    }
    const auto* v6 = reinterpret_cast<const struct sockaddr_in6*>(&address);
    return IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr);
  }

  /**
   * Sends the handshake on a connecting backend socket, which tells whether the connect is done:
   * sent (the tunnel is open), refused with the connect's error (the client goes back), or
   * refused with EAGAIN while the connect is in progress (false: wait for epoll).
   */
  bool SendHandshake(Tunnel* t) {
    End& upstream = t->ends[kUpstream];
    ssize_t sent = send(upstream.fd, upstream.pending.data(), upstream.pending.size(), MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return false;
      HandBack(t, kConnectFailed, errno);
      return true;
    }
    upstream.offset = static_cast<size_t>(sent);
    t->connecting = false;
    t->lastActive = now_;
    if (t->answerMs > 0) t->answerDeadline = now_ + t->answerMs;
    else timed_.erase(t);
    Report(t->id, kConnected);
    // The client is read from here on; what is left of the handshake is written first.
    if (upstream.offset == upstream.pending.size()) {
      upstream.pending.clear();
      upstream.offset = 0;
    }
    Update(t);
    return true;
  }

  /** The backend connection of a connecting tunnel is writable or failed: the handshake says which. */
  void Connected(Tunnel* t) { SendHandshake(t); }

  /** The backend's first bytes: their status line is reported, and the answer deadline is over. */
  void Answered(Tunnel* t, const char* data, size_t length) {
    t->answered = true;
    timed_.erase(t);
    int status = 0;
    if (length >= 12 && memcmp(data, "HTTP/", 5) == 0) {
      for (size_t i = 9; i < 12; i++) {
        if (data[i] < '0' || data[i] > '9') {
          status = 0;
          break;
        }
        status = status * 10 + (data[i] - '0');
      }
    }
    t->refused = status != 101;
    Report(t->id, kAnswered, status);
  }

  /**
   * Gives the client socket back to JavaScript (a failed or timed-out connect, or no answer in
   * time): the backend socket is closed, the client's is left open and reported.
   */
  void HandBack(Tunnel* t, int kind, int error) {
    End& client = t->ends[kClient];
    CloseFd(&t->ends[kUpstream]);
    Unwatch(&client);
    int fd = client.fd;
    client.fd = -1;
    t->dead = true;
    timed_.erase(t);
    if (t->closing) closing_.erase(t);
    tunnels_.erase(t->id);
    graveyard_.push_back(t);
    Report(t->id, kind, error, fd);
  }

  /** Hands back tunnels past their connect or answer deadline (every 100 ms while there are any). */
  void SweepDeadlines() {
    std::vector<Tunnel*> due;
    for (Tunnel* t : timed_) {
      int64_t deadline = t->connecting ? t->connectDeadline : t->answered ? 0 : t->answerDeadline;
      if (deadline > 0 && now_ >= deadline) due.push_back(t);
    }
    for (Tunnel* t : due) HandBack(t, t->connecting ? kConnectFailed : kAnswerTimedOut, 0);
  }

  // --- Accepting (listen()) ---

  void WatchListener(Listener* l) {
    struct epoll_event ev = {};
    ev.events = EPOLLIN;
    ev.data.ptr = static_cast<Watched*>(l);
    l->watched = epoll_ctl(epoll_, EPOLL_CTL_ADD, l->fd, &ev) == 0;
  }

  /** Accepts what is waiting on a listening socket; each connection's head is read from here. */
  void Accept(Listener* l) {
    for (int i = 0; i < kAcceptBurst; i++) {
      struct sockaddr_storage address;
      socklen_t length = sizeof address;
      int fd = accept4(l->fd, reinterpret_cast<struct sockaddr*>(&address), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // Out of descriptors: the waiting connections stay queued, and the listener rests
          // rather than waking this thread again at once.
          if (l->watched) epoll_ctl(epoll_, EPOLL_CTL_DEL, l->fd, nullptr);
          l->watched = false;
          l->restUntil = now_ + kAcceptRestMs;
          resting_ = true;
        }
        return;
      }
      // TCP_NODELAY comes from the listening socket (Linux copies it to accepted ones).
      auto* in = new Incoming();
      in->listener = l;
      in->fd = fd;
      // As on Node's side, a keep-alive time of 0 closes a silent connection at the next sweep.
      in->deadline = now_ + l->idleMs;
      char text[INET6_ADDRSTRLEN] = "";
      if (address.ss_family == AF_INET) {
        auto* v4 = reinterpret_cast<struct sockaddr_in*>(&address);
        inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text);
        in->port = ntohs(v4->sin_port);
      } else if (address.ss_family == AF_INET6) {
        auto* v6 = reinterpret_cast<struct sockaddr_in6*>(&address);
        inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text);
        in->port = ntohs(v6->sin6_port);
      }
      in->ip = text;
      incomings_.insert(in);
      // The request is often there already: read it before asking epoll.
      if (!ReadHead(in)) continue;
      if (!Register(in)) DropIncoming(in);
    }
  }

  /**
   * Reads a new connection: hands it to JavaScript once its head is complete (or kMaxHead bytes
   * came), closes it at its end or an error. True while its head is still awaited.
   */
  bool ReadHead(Incoming* in) {
    char* buffer = buffer_.data();
    for (;;) {
      size_t room = kMaxHead - in->bytes.size();
      ssize_t got = read(in->fd, buffer, room);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      if (got <= 0) {
        // Gone before a whole head: nothing to answer.
        DropIncoming(in);
        return false;
      }
      size_t from = in->bytes.size() < 3 ? 0 : in->bytes.size() - 3;
      bool first = in->bytes.empty();
      in->bytes.append(buffer, static_cast<size_t>(got));
      if (HeadEnds(in->bytes, from) || in->bytes.size() >= kMaxHead) {
        HandOverIncoming(in, kIncoming);
        return false;
      }
      // The head's time starts at its first byte.
      if (first) in->deadline = in->listener->headMs > 0 ? now_ + in->listener->headMs : 0;
    }
  }

  /** Whether the bytes hold an empty line (CRLF CRLF, or bare LFs, which llhttp then refuses) from `from` on. */
  static bool HeadEnds(const std::string& bytes, size_t from) {
    for (size_t i = from; i < bytes.size(); i++) {
      if (bytes[i] != '\n') continue;
      if (i + 1 < bytes.size() && bytes[i + 1] == '\n') return true;
      if (i + 2 < bytes.size() && bytes[i + 1] == '\r' && bytes[i + 2] == '\n') return true;
    }
    return false;
  }

  /**
   * The connection and what was read of it go to JavaScript. It stays registered, parked, until
   * JavaScript gives it back (exchange()) or takes it (release(), connect()): what it sends
   * meanwhile waits in the socket.
   */
  void HandOverIncoming(Incoming* in, int kind) {
    if (reported_ == nullptr) reported_ = new std::vector<Event>();
    reported_->push_back(Event{in->listener->id, kind, in->port, in->fd, std::move(in->bytes), in->ip});
    in->bytes.clear();
    in->deadline = 0;
    // One whose head came with the accept is not registered yet: exchange() registers it.
    in->parked = true;
    parked_[in->fd] = in;
  }

  /** A parked connection that became readable waits, unwatched, for JavaScript. */
  void Mute(Incoming* in) { SetInterest(in, 0); }

  /** Watches a client connection for its bytes and its end; false if epoll refused it. */
  bool Register(Incoming* in) {
    struct epoll_event ev = {};
    ev.events = kClientEvents;
    ev.data.ptr = static_cast<Watched*>(in);
    in->watched = epoll_ctl(epoll_, EPOLL_CTL_ADD, in->fd, &ev) == 0;
    in->events = in->watched ? kClientEvents : 0;
    return in->watched;
  }

  void Unregister(Incoming* in) {
    if (in->watched) epoll_ctl(epoll_, EPOLL_CTL_DEL, in->fd, nullptr);
    in->watched = false;
    in->events = 0;
  }

  /** A parked connection is forgotten, its descriptor left to JavaScript, which owns it. */
  void ForgetParked(Incoming* in) {
    parked_.erase(in->fd);
    Unregister(in);
    in->fd = -1;
    Forget(in);
  }

  /**
   * JavaScript takes a parked connection's descriptor (for a Node socket or a tunnel): the pipe
   * forgets it. Called on the main thread outside the loop's round, so it is done at once.
   */
  void Release(int fd) {
    auto found = parked_.find(fd);
    if (found != parked_.end()) ForgetParked(found->second);
  }

  void SetInterest(Incoming* in, uint32_t want) {
    if (!in->watched || want == in->events) return;
    struct epoll_event ev = {};
    ev.events = want;
    ev.data.ptr = static_cast<Watched*>(in);
    epoll_ctl(epoll_, EPOLL_CTL_MOD, in->fd, &ev);
    in->events = want;
  }

  void DropIncoming(Incoming* in) {
    if (in->fd >= 0) {
      Unregister(in);
      close(in->fd);
      in->fd = -1;
    }
    in->watched = false;
    Forget(in);
  }

  void Forget(Incoming* in) {
    in->dead = true;
    incomings_.erase(in);
    deadIncomings_.push_back(in);
  }

  /**
   * Stops accepting on a listener; the connections it has not handed over yet are closed. Its
   * socket is closed and the listener reported closed, or, when `handBack`, reported with the
   * socket, still listening, as JavaScript's again.
   */
  void Unlisten(uint64_t id, bool handBack = false) {
    auto found = listeners_.find(id);
    if (found == listeners_.end()) return;
    Listener* l = found->second;
    listeners_.erase(found);
    std::vector<Incoming*> own;
    for (Incoming* in : incomings_) {
      if (in->listener == l) own.push_back(in);
    }
    for (Incoming* in : own) {
      in->listener = nullptr;
      if (in->parked) {
        // JavaScript still answers it (exchange() or release()), as a connection of no listener.
        ForgetParked(in);
      } else if (in->exchange != nullptr) {
        // The proxy stops: a response not yet begun tells the client that the connection closes.
        if (!in->exchange->responded) in->exchange->keepAlive = false;
      } else if (!in->lingering) {
        DropIncoming(in);
      }
    }
    if (l->watched) epoll_ctl(epoll_, EPOLL_CTL_DEL, l->fd, nullptr);
    l->watched = false;
    if (handBack) {
      Report(l->id, kListenerBack, 0, l->fd);
    } else {
      close(l->fd);
      Report(l->id, kClosed);
    }
    l->fd = -1;
    l->dead = true;
    deadListeners_.push_back(l);
  }

  /** Listeners that rested for want of descriptors are watched again. */
  void WakeListeners() {
    resting_ = false;
    for (auto& entry : listeners_) {
      Listener* l = entry.second;
      if (l->watched) continue;
      if (now_ >= l->restUntil) WatchListener(l);
      else resting_ = true;
    }
  }

  /** New connections past their deadline: silent ones close, slow heads go to JavaScript (every second). */
  void SweepIncoming() {
    std::vector<Incoming*> due;
    for (Incoming* in : incomings_) {
      if (in->deadline > 0 && now_ >= in->deadline) due.push_back(in);
    }
    for (Incoming* in : due) {
      if (in->bytes.empty() || in->lingering || in->listener == nullptr) DropIncoming(in);
      else HandOverIncoming(in, kIncomingLate);
    }
  }

  // --- HTTP exchanges (exchange(), forward(), reply()) ---

  /** An event on a client connection: its head is read, or it is in an exchange, parked, or lingering. */
  void ClientEvent(Incoming* in, uint32_t events) {
    if (in->parked) {
      // An error or hang-up is reported whatever the interest: it leaves epoll until exchange().
      if (events & (EPOLLERR | EPOLLHUP)) Unregister(in);
      else Mute(in);
      return;
    }
    if (in->exchange != nullptr) {
      ExchangeClientEvent(in->exchange, events);
      return;
    }
    if (in->lingering) {
      // Read and dropped until the client's FIN, so that closing cannot reset the last response.
      char* buffer = buffer_.data();
      for (;;) {
        ssize_t got = read(in->fd, buffer, kReadSize);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (got <= 0) {
          DropIncoming(in);
          return;
        }
      }
    }
    ReadHead(in);
  }

  /**
   * exchange(): JavaScript gives back a connection whose request it will have forwarded, with the
   * bytes that followed the request's head.
   */
  void StartExchange(Command& c) {
    Exchange* ex = NewExchange();
    ex->id = c.id;
    ex->noBody = c.noBody;
    ex->keepAlive = c.keepAlive;
    ex->retriable = c.retriable;
    Incoming* in;
    auto found = parked_.find(c.fd);
    if (found != parked_.end()) {
      in = found->second;
      parked_.erase(found);
    } else {
      // Not parked here (its listener has gone): served once, then closed.
      in = new Incoming();
      in->fd = c.fd;
      incomings_.insert(in);
    }
    in->parked = false;
    in->exchange = ex;
    in->deadline = 0;
    c.toClient.append(in->bytes);
    in->bytes.swap(c.toClient);
    ex->client = in;
    exchanges_[ex->id] = ex;
    if (!in->watched && !Register(in)) {
      Abandon(ex);
      return;
    }
    SetClientInterest(ex);
    // The first attempt came with it.
    if (c.addressLength > 0) Route(ex, c);
  }

  /** A spare exchange made new (its buffers kept), or a new one. */
  Exchange* NewExchange() {
    if (spareExchanges_.empty()) return new Exchange();
    Exchange* ex = spareExchanges_.back();
    spareExchanges_.pop_back();
    std::string response = std::move(ex->response);
    std::string out = std::move(ex->out);
    *ex = Exchange();
    response.clear();
    out.clear();
    ex->response = std::move(response);
    ex->out = std::move(out);
    return ex;
  }

  /** forward(): an attempt of the exchange on a backend (a failover). */
  void Forward(Command& c) {
    auto found = exchanges_.find(c.id);
    if (found == exchanges_.end() || found->second->attempting || found->second->responded) return;
    Route(found->second, c);
  }

  void Route(Exchange* ex, Command& c) {
    ex->head.swap(c.toUpstream);
    ex->address = c.address;
    ex->addressLength = c.addressLength;
    ex->key = PoolKey(c.address);
    ex->connectMs = c.connectMs;
    ex->responseMs = c.responseMs;
    ex->idleMs = c.idleMs;
    poolMs_ = c.poolMs;
    Attempt(ex);
  }

  /** reply(): JavaScript's own answer (an error), in place of a backend's. */
  void Reply(Command& c) {
    auto found = exchanges_.find(c.id);
    if (found == exchanges_.end() || found->second->attempting || found->second->responded) return;
    Exchange* ex = found->second;
    ex->replying = true;
    ex->responded = true;
    ex->complete = true;
    ex->keepAlive = ex->keepAlive && c.keepAlive;
    ex->out.swap(c.toClient);
    ex->lastActive = now_;
    FlushClient(ex);
  }

  /** Sends the request on an idle pooled connection to the backend, or on a new one. */
  void Attempt(Exchange* ex) {
    ex->attempting = true;
    ex->reused = false;
    ex->connecting = false;
    ex->sent = false;
    ex->bytesRead = false;
    ex->headSent = 0;
    ex->lastActive = now_;
    auto idle = pool_.find(ex->key);
    while (idle != pool_.end() && !idle->second.empty()) {
      Upstream* u = idle->second.back();
      idle->second.pop_back();
      // Past the pool's time (the sweep runs once a second): not used again.
      if (now_ - u->since >= poolMs_) {
        DiscardUpstream(u);
        continue;
      }
      u->exchange = ex;
      ex->upstream = u;
      ex->reused = true;
      SendRequest(ex);
      return;
    }
    int fd = socket(ex->address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      FailAttempt(ex, errno);
      return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto* u = new Upstream();
    u->fd = fd;
    u->key = ex->key;
    u->exchange = ex;
    ex->upstream = u;
    ex->connecting = true;
    if (connect(fd, reinterpret_cast<struct sockaddr*>(&ex->address), ex->addressLength) < 0 &&
        errno != EINPROGRESS) {
      FailAttempt(ex, errno);
      return;
    }
    // On loopback the TCP handshake is done within connect(): the request goes out at once.
    if (IsLoopback(ex->address)) {
      SendRequest(ex);
      return;
    }
    SetUpstreamInterest(ex->upstream, EPOLLOUT);
  }

  /**
   * Writes the request head on the attempt's connection: all of it (the response is awaited), part
   * (the rest when it is writable), or nothing yet while it connects.
   */
  void SendRequest(Exchange* ex) {
    Upstream* u = ex->upstream;
    while (ex->headSent < ex->head.size()) {
      ssize_t sent = send(u->fd, ex->head.data() + ex->headSent, ex->head.size() - ex->headSent, MSG_NOSIGNAL);
      if (sent < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          SetUpstreamInterest(u, EPOLLOUT);
          return;
        }
        FailAttempt(ex, errno);
        return;
      }
      ex->connecting = false;
      ex->headSent += static_cast<size_t>(sent);
    }
    ex->connecting = false;
    ex->sent = true;
    ex->lastActive = now_;
    SetUpstreamInterest(u, EPOLLIN | EPOLLRDHUP);
  }

  void SetUpstreamInterest(Upstream* u, uint32_t want) {
    if (u->watched && want == u->events) return;
    struct epoll_event ev = {};
    ev.events = want;
    ev.data.ptr = static_cast<Watched*>(u);
    if (u->watched) {
      epoll_ctl(epoll_, EPOLL_CTL_MOD, u->fd, &ev);
    } else {
      if (epoll_ctl(epoll_, EPOLL_CTL_ADD, u->fd, &ev) != 0) {
        if (u->exchange != nullptr) FailAttempt(u->exchange, errno);
        return;
      }
      u->watched = true;
    }
    u->events = want;
  }

  /** An event on a backend connection: an idle pooled one closes, one in use is written or read. */
  void UpstreamEvent(Upstream* u, uint32_t events) {
    Exchange* ex = u->exchange;
    if (ex == nullptr) {
      // Idle in the pool: the backend closed it, or sent what no request asked for.
      ClosePooled(u);
      return;
    }
    if (!ex->sent) {
      SendRequest(ex);
      return;
    }
    // Read even on an error: what the backend sent before a reset still counts.
    char* buffer = buffer_.data();
    ssize_t got = read(u->fd, buffer, kReadSize);
    if (got > 0) {
      ex->bytesRead = true;
      ex->lastActive = now_;
      // The backend's FIN came with these bytes: the connection is not pooled after them.
      if (events & (EPOLLRDHUP | EPOLLHUP)) ex->clean = false;
      Respond(ex, buffer, static_cast<size_t>(got));
    } else if (got == 0) {
      UpstreamEnded(ex);
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      FailAttempt(ex, errno);
    } else if (events & EPOLLERR) {
      int error = 0;
      socklen_t length = sizeof error;
      getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &error, &length);
      FailAttempt(ex, error != 0 ? error : ECONNRESET);
    }
  }

  /** Bytes of the response: its head is rewritten for the client, its body re-framed. */
  void Respond(Exchange* ex, const char* data, size_t length) {
    if (ex->responded) {
      if (Body(ex, data, length)) FlushClient(ex);
      return;
    }
    // FlushClient() lets the backend connection go once the response is complete.
    // Mostly the whole head comes in one read: it is read where it is, else gathered first.
    bool gathered = !ex->response.empty();
    if (gathered) {
      ex->response.append(data, length);
      data = ex->response.data();
      length = ex->response.size();
    }
    for (;;) {
      size_t end = roomring_http::HeadEnd(data, length);
      if (end == 0) {
        // Kept for the next read, without the interim heads already read.
        if (gathered) ex->response.erase(0, static_cast<size_t>(data - ex->response.data()));
        else ex->response.assign(data, length);
        if (length > kMaxResponseHead) FailAttempt(ex, kBadResponse);
        return;
      }
      roomring_http::ResponseHead head;
      if (!roomring_http::RewriteHead(data, end, ex->noBody, ex->keepAlive, &head, &ex->out)) {
        ex->out.clear();
        FailAttempt(ex, kBadResponse);
        return;
      }
      data += end;
      length -= end;
      if (head.status >= 100 && head.status < 200) continue;
      ex->parsed = head;
      ex->responded = true;
      ex->remaining = head.length;
      if (head.framing == roomring_http::Framing::kNone ||
          (head.framing == roomring_http::Framing::kLength && head.length == 0))
        ex->complete = true;
      break;
    }
    // What is left of `data` may point into `response`: it is framed before that is let go.
    bool framed = Body(ex, data, length);
    ex->response.clear();
    if (framed) FlushClient(ex);
  }

  /**
   * The whole response is read: the backend connection goes back to the pool (or closes) at once,
   * while the client may still be written, so its failures no longer touch this exchange and a
   * pipelined request next in line may take it.
   */
  void ReleaseUpstream(Exchange* ex) {
    // No backend limit applies any more: the client takes the rest at its pace, as on Node's side.
    ex->attempting = false;
    Upstream* u = ex->upstream;
    if (u == nullptr) return;
    if (!ex->parsed.keepAlive || !ex->clean || poolMs_ <= 0) {
      CloseUpstream(ex);
      return;
    }
    ex->upstream = nullptr;
    u->exchange = nullptr;
    u->since = now_;
    pool_[u->key].push_back(u);
    SetUpstreamInterest(u, EPOLLIN | EPOLLRDHUP);
  }

  /** Frames body bytes for the client; false when the exchange was abandoned (a bad chunk). */
  bool Body(Exchange* ex, const char* data, size_t length) {
    if (length == 0) return true;
    if (ex->complete) {
      ex->clean = false;
      return true;
    }
    switch (ex->parsed.framing) {
      case roomring_http::Framing::kLength: {
        size_t take = length < ex->remaining ? length : static_cast<size_t>(ex->remaining);
        ex->out.append(data, take);
        ex->remaining -= take;
        if (ex->remaining == 0) ex->complete = true;
        if (take < length) ex->clean = false;
        break;
      }
      case roomring_http::Framing::kChunked: {
        size_t used = 0;
        auto result = ex->dechunker.Feed(data, length, &ex->out, &used);
        if (result == roomring_http::Dechunker::Result::kBad) {
          Abandon(ex);
          return false;
        }
        if (result == roomring_http::Dechunker::Result::kDone) {
          ex->out.append(roomring_http::kLastChunk);
          ex->complete = true;
          if (used < length) ex->clean = false;
        }
        break;
      }
      case roomring_http::Framing::kClose:
        roomring_http::AppendChunk(data, length, &ex->out);
        break;
      case roomring_http::Framing::kNone:
        break;
    }
    return true;
  }

  /** The backend closed its side: a body that runs to the close ends, anything else was cut. */
  void UpstreamEnded(Exchange* ex) {
    if (ex->responded && ex->parsed.framing == roomring_http::Framing::kClose) {
      ex->out.append(roomring_http::kLastChunk);
      ex->complete = true;
      ex->clean = false;
      FlushClient(ex);
      return;
    }
    FailAttempt(ex, ECONNRESET);
  }

  /** Writes what the client has not taken yet; the exchange ends once the response is all written. */
  void FlushClient(Exchange* ex) {
    if (ex->complete) ReleaseUpstream(ex);
    Incoming* in = ex->client;
    while (ex->outOffset < ex->out.size()) {
      ssize_t sent = send(in->fd, ex->out.data() + ex->outOffset, ex->out.size() - ex->outOffset, MSG_NOSIGNAL);
      if (sent < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        Abandon(ex);
        return;
      }
      ex->outOffset += static_cast<size_t>(sent);
      ex->lastActive = now_;
    }
    if (ex->outOffset == ex->out.size()) {
      ex->out.clear();
      ex->outOffset = 0;
      if (ex->complete) {
        Finish(ex);
        return;
      }
    }
    SetClientInterest(ex);
    // The backend is not read while the client has bytes to take (back-pressure).
    if (ex->upstream != nullptr && ex->sent && !ex->complete)
      SetUpstreamInterest(ex->upstream, ex->out.empty() ? EPOLLIN | EPOLLRDHUP : 0);
  }

  void SetClientInterest(Exchange* ex) {
    Incoming* in = ex->client;
    uint32_t want = EPOLLRDHUP;
    if (in->bytes.size() < kMaxHead) want |= EPOLLIN;
    if (!ex->out.empty()) want |= EPOLLOUT;
    SetInterest(in, want);
  }

  /**
   * The client of an exchange: written when it can take more, read for what it sends next (kept
   * for after the response), and gone at its FIN or an error, as on the JavaScript path.
   */
  void ExchangeClientEvent(Exchange* ex, uint32_t events) {
    Incoming* in = ex->client;
    if (events & (EPOLLERR | EPOLLRDHUP | EPOLLHUP)) {
      Abandon(ex);
      return;
    }
    if (events & EPOLLIN) {
      char* buffer = buffer_.data();
      ssize_t got = read(in->fd, buffer, kMaxHead - in->bytes.size());
      if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        Abandon(ex);
        return;
      }
      if (got > 0) in->bytes.append(buffer, static_cast<size_t>(got));
    }
    if (events & EPOLLOUT) {
      FlushClient(ex);
      return;
    }
    SetClientInterest(ex);
  }

  /**
   * An attempt failed. After the response began, the exchange is abandoned; a stale pooled
   * connection is tried again once for a retriable request; else JavaScript decides (failover or
   * an error answer) and the exchange waits.
   */
  void FailAttempt(Exchange* ex, int code) {
    if (ex->dead) return;
    if (ex->responded) {
      Abandon(ex);
      return;
    }
    bool stale = ex->reused && !ex->bytesRead;
    if (stale && code == EPIPE) code = ECONNRESET;
    bool connected = !ex->connecting;
    CloseUpstream(ex);
    ex->response.clear();
    if (stale && code == ECONNRESET && ex->retriable && !ex->resent) {
      ex->resent = true;
      Attempt(ex);
      return;
    }
    ex->attempting = false;
    Report(ex->id, kExchangeFailed, code, (connected ? 1 : 0) | (stale ? 2 : 0));
  }

  /** Closes the attempt's backend connection. */
  void CloseUpstream(Exchange* ex) {
    Upstream* u = ex->upstream;
    if (u == nullptr) return;
    ex->upstream = nullptr;
    u->exchange = nullptr;
    DiscardUpstream(u);
  }

  void DiscardUpstream(Upstream* u) {
    if (u->watched) epoll_ctl(epoll_, EPOLL_CTL_DEL, u->fd, nullptr);
    u->watched = false;
    close(u->fd);
    u->fd = -1;
    u->dead = true;
    deadUpstreams_.push_back(u);
  }

  /** The response is all written: the backend connection is pooled, the client reads its next head. */
  void Finish(Exchange* ex) {
    Incoming* in = ex->client;
    bool keep = ex->keepAlive && in->listener != nullptr;
    EndExchange(ex, ex->parsed.status);
    if (!keep) {
      Linger(in);
      return;
    }
    in->deadline = now_ + in->listener->idleMs;
    SetInterest(in, kClientEvents);
    if (!in->bytes.empty()) {
      if (HeadEnds(in->bytes, 0) || in->bytes.size() >= kMaxHead) {
        HandOverIncoming(in, kIncoming);
        return;
      }
      // A pipelined head's time starts now, after the response before it.
      in->deadline = in->listener->headMs > 0 ? now_ + in->listener->headMs : 0;
    }
  }

  /** What the pool keeps a backend's connections by: its address and port, short enough to need no allocation for IPv4. */
  static std::string PoolKey(const struct sockaddr_storage& address) {
    if (address.ss_family == AF_INET) {
      const auto* v4 = reinterpret_cast<const struct sockaddr_in*>(&address);
      std::string key(reinterpret_cast<const char*>(&v4->sin_addr), 4);
      key.append(reinterpret_cast<const char*>(&v4->sin_port), 2);
      return key;
    }
    const auto* v6 = reinterpret_cast<const struct sockaddr_in6*>(&address);
    std::string key(reinterpret_cast<const char*>(&v6->sin6_addr), 16);
    key.append(reinterpret_cast<const char*>(&v6->sin6_port), 2);
    key.append(reinterpret_cast<const char*>(&v6->sin6_scope_id), sizeof v6->sin6_scope_id);
    return key;
  }

  /** The exchange is over: JavaScript is told, and the client is the exchange's no more. */
  void EndExchange(Exchange* ex, int status) {
    // Once only: a reused exchange must never be spared twice.
    if (ex->dead) return;
    ex->dead = true;
    ex->client->exchange = nullptr;
    exchanges_.erase(ex->id);
    deadExchanges_.push_back(ex);
    Report(ex->id, kExchangeDone, status);
  }

  /** Ends our side and drops what the client still sends until its FIN or kLingerMs. */
  void Linger(Incoming* in) {
    shutdown(in->fd, SHUT_WR);
    in->lingering = true;
    in->bytes.clear();
    in->deadline = now_ + kLingerMs;
    SetInterest(in, kClientEvents);
  }

  /**
   * Gives up on the exchange: both connections close. Mid-response the client sees the cut; when
   * the client went away (or failed), the backend connection closes with it.
   */
  void Abandon(Exchange* ex) {
    CloseUpstream(ex);
    Incoming* in = ex->client;
    EndExchange(ex, ex->parsed.status);
    DropIncoming(in);
  }

  /**
   * Attempts past their limit fail: connecting, awaiting the response, or silent mid-response. A
   * client that takes none of the bytes waiting for it within its listener's send limit is
   * dropped. (While bytes wait for the client the backend is not read, so `lastActive` is the
   * client's last progress.)
   */
  void SweepExchanges() {
    std::vector<Exchange*> failed;
    std::vector<Exchange*> stalled;
    for (auto& entry : exchanges_) {
      Exchange* ex = entry.second;
      Listener* l = ex->client->listener;
      int64_t sendMs = l != nullptr ? l->sendMs : 0;
      if (!ex->out.empty() && sendMs > 0 && now_ - ex->lastActive >= sendMs) {
        stalled.push_back(ex);
      } else if (ex->attempting) {
        int64_t limit = ex->connecting ? ex->connectMs : ex->responded ? ex->idleMs : ex->responseMs;
        if (limit > 0 && now_ - ex->lastActive >= limit) failed.push_back(ex);
      }
    }
    for (Exchange* ex : failed) FailAttempt(ex, ex->connecting ? kConnectTimedOut : kResponseTimedOut);
    for (Exchange* ex : stalled) Abandon(ex);
  }

  /** Idle pooled connections older than the pool's keep-alive time close (every second). */
  void SweepPool() {
    for (auto& entry : pool_) {
      auto& idle = entry.second;
      idle.erase(std::remove_if(idle.begin(), idle.end(),
                                [this](Upstream* u) {
                                  if (now_ - u->since < poolMs_) return false;
                                  DiscardUpstream(u);
                                  return true;
                                }),
                 idle.end());
    }
  }

  void ClosePooled(Upstream* u) {
    auto& idle = pool_[u->key];
    idle.erase(std::remove(idle.begin(), idle.end(), u), idle.end());
    DiscardUpstream(u);
  }

  /** Every idle pooled connection closes (the proxy stops). */
  void DropPool() {
    for (auto& entry : pool_) {
      for (Upstream* u : entry.second) DiscardUpstream(u);
    }
    pool_.clear();
  }

  void StartClosing(Tunnel* t, int64_t ms) {
    if (!t->closing) {
      t->closing = true;
      closing_.insert(t);
    }
    t->deadline = now_ + ms;
  }

  void Handle(End* end, uint32_t events) {
    char* buffer = buffer_.data();
    Tunnel* t = end->tunnel;
    if (t->connecting) {
      // Only the backend socket is watched while connecting.
      Connected(t);
      return;
    }
    MarkToMove(t);
    End* peer = &t->ends[1 - end->side];
    if (events & EPOLLERR) {
      Failed(end);
      return;
    }
    if (events & EPOLLOUT) {
      if (!Flush(end)) return;
    }
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) && (end->events & EPOLLIN)) {
      ssize_t got = read(end->fd, buffer, kReadSize);
      if (got > 0) {
        t->lastActive = now_;
        if (!t->answered && end->side == kUpstream) Answered(t, buffer, static_cast<size_t>(got));
        bool forward = !t->closing && !(t->refused && end->side == kClient);
        if (forward && !Send(peer, buffer, static_cast<size_t>(got))) return;
        // The FIN came with these bytes (EPOLLRDHUP) and the read took all there was: nothing more
        // can come, so the end is known without a read that returns 0.
        if ((events & EPOLLRDHUP) && static_cast<size_t>(got) < kReadSize) end->eof = true;
      } else if (got == 0) {
        end->eof = true;
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        Failed(end);
        return;
      }
    } else if ((events & EPOLLHUP) && !(events & EPOLLOUT)) {
      // Both directions of this socket are shut (ours by our FIN) while it is not being read:
      // level-triggered epoll would report that again and again. It leaves epoll until it is to
      // be read again; a hang-up without our FIN is a failure.
      if (!end->shut) {
        Failed(end);
        return;
      }
      Unwatch(end);
    }
    Update(t);
  }

  /**
   * A socket failed (reset, or an error on read or write). From the backend, what it sent before
   * is still read and goes to the client, which then gets the end; from the client, the tunnel
   * closes.
   */
  void Failed(End* end) {
    Tunnel* t = end->tunnel;
    if (t->dead) return;
    char* buffer = buffer_.data();
    if (end->side == kClient) {
      Close(t);
      return;
    }
    End* client = &t->ends[kClient];
    for (;;) {
      ssize_t got = read(end->fd, buffer, kReadSize);
      if (got <= 0) break;
      if (!t->answered) Answered(t, buffer, static_cast<size_t>(got));
      if (!t->closing) {
        client->pending.append(buffer, static_cast<size_t>(got));
      }
    }
    end->eof = true;
    end->shut = true;
    end->pending.clear();
    end->offset = 0;
    CloseFd(end);
    if (!client->pending.empty() && client->fd >= 0 && !Flush(client)) return;
    Update(t);
  }

  /** Writes `data` to `end`, queueing what the socket cannot take now; false when the tunnel closed. */
  bool Send(End* end, const char* data, size_t length) {
    if (end->shut) return true;
    if (!end->pending.empty()) {
      end->pending.append(data, length);
      return true;
    }
    ssize_t sent = send(end->fd, data, length, MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        Failed(end);
        return !end->tunnel->dead;
      }
      sent = 0;
    }
    if (sent > 0) end->tunnel->lastActive = now_;
    if (static_cast<size_t>(sent) < length) end->pending.assign(data + sent, length - sent);
    return true;
  }

  /** Writes what is queued for `end`; false when the tunnel closed. */
  bool Flush(End* end) {
    while (end->offset < end->pending.size()) {
      ssize_t sent =
          send(end->fd, end->pending.data() + end->offset, end->pending.size() - end->offset, MSG_NOSIGNAL);
      if (sent < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
        if (errno == EINTR) continue;
        Failed(end);
        return false;
      }
      end->offset += static_cast<size_t>(sent);
      end->tunnel->lastActive = now_;
    }
    end->pending.clear();
    end->pending.shrink_to_fit();
    end->offset = 0;
    return true;
  }

  /** Passes on FINs, closes what is finished, and sets each socket's epoll interest. */
  void Update(Tunnel* t) {
    // A backend that ended or failed before answering, or a tunnel being closed, is no longer
    // waited for: its client is not handed back for a timeout answer.
    if (!t->answered && (t->closing || t->ends[kUpstream].eof)) timed_.erase(t);
    for (End& end : t->ends) {
      End& peer = t->ends[1 - end.side];
      bool done = t->closing || peer.eof || (t->refused && end.side == kUpstream);
      if (end.fd >= 0 && !end.shut && end.pending.empty() && done) {
        shutdown(end.fd, SHUT_WR);
        end.shut = true;
        if (t->halfClosedAt == 0) t->halfClosedAt = now_;
      }
    }
    End& client = t->ends[kClient];
    End& upstream = t->ends[kUpstream];
    if (client.eof && client.shut && (t->closing || upstream.eof)) {
      Close(t);
      return;
    }
    if (!t->closing && upstream.eof && client.shut) {
      // The backend is done and the client has it all: the backend socket closes, and the client
      // lingers until its FIN, so what it still sends cannot turn our close into a reset.
      CloseFd(&upstream);
      StartClosing(t, kLingerMs);
    }
    for (End& end : t->ends) {
      if (end.fd < 0) continue;
      End& peer = t->ends[1 - end.side];
      uint32_t want = 0;
      if (!end.eof && (t->closing || peer.pending.empty())) want |= EPOLLIN | EPOLLRDHUP;
      if (!end.pending.empty()) want |= EPOLLOUT;
      if (!end.watched) {
        if (want == 0) continue;
        struct epoll_event ev = {};
        ev.events = want;
        ev.data.ptr = static_cast<Watched*>(&end);
        end.watched = epoll_ctl(epoll_, EPOLL_CTL_ADD, end.fd, &ev) == 0;
        end.events = want;
      } else if (want != end.events) {
        struct epoll_event ev = {};
        ev.events = want;
        ev.data.ptr = static_cast<Watched*>(&end);
        epoll_ctl(epoll_, EPOLL_CTL_MOD, end.fd, &ev);
        end.events = want;
      }
    }
  }

  void Unwatch(End* end) {
    if (!end->watched) return;
    epoll_ctl(epoll_, EPOLL_CTL_DEL, end->fd, nullptr);
    end->watched = false;
    end->events = 0;
  }

  void CloseFd(End* end) {
    if (end->fd < 0) return;
    // Taken out of epoll even when the pipe alone holds the socket: a child process forked
    // meanwhile (and not yet exec'd) would hold it too, and keep its registration alive.
    Unwatch(end);
    close(end->fd);
    end->fd = -1;
  }

  void Close(Tunnel* t) {
    if (t->dead) return;
    t->dead = true;
    if (t->closing) closing_.erase(t);
    timed_.erase(t);
    for (End& end : t->ends) CloseFd(&end);
    tunnels_.erase(t->id);
    graveyard_.push_back(t);
    Report(t->id, kClosed);
  }

  /** Closes closing tunnels past their deadline (every 100 ms while there are any). */
  void SweepClosing() {
    std::vector<Tunnel*> due;
    for (Tunnel* t : closing_) {
      if (now_ >= t->deadline) due.push_back(t);
    }
    for (Tunnel* t : due) Close(t);
  }

  /** Marks a tunnel of the main loop that has been open for moveAfterMs_ to move at the end of the round. */
  void MarkToMove(Tunnel* t) {
    if (worker_ != nullptr && !t->moving && t->answered && !t->connecting && !t->closing && moveAfterMs_ >= 0 &&
        now_ - t->since >= moveAfterMs_ && worker_->working()) {
      t->moving = true;
      moving_.push_back(t);
    }
  }

  /**
   * Closes tunnels idle for their limit (every second). In the main loop, quiet tunnels old enough
   * to move are marked too, so the main loop holds only young ones.
   */
  void SweepIdle() {
    std::vector<Tunnel*> due;
    int64_t halfMs = gHalfCloseMs.load(std::memory_order_relaxed);
    for (auto& entry : tunnels_) {
      Tunnel* t = entry.second;
      MarkToMove(t);
      // A connect has its own limit (timeouts.connect); idleness counts once it is open.
      if (t->idleMs > 0 && !t->connecting && now_ - t->lastActive >= t->idleMs) due.push_back(t);
      // One side ended and the other has not followed within the limit.
      else if (halfMs > 0 && t->halfClosedAt > 0 && now_ - t->halfClosedAt >= halfMs) due.push_back(t);
    }
    for (Tunnel* t : due) Close(t);
  }

  /** Frees tunnels closed in this round (events of the same round may still name them) and reports them. */
  void Bury() {
    for (Tunnel* t : graveyard_) delete t;
    graveyard_.clear();
    for (Incoming* in : deadIncomings_) delete in;
    deadIncomings_.clear();
    for (Listener* l : deadListeners_) delete l;
    deadListeners_.clear();
    // Up to a few hundred are kept, their buffers with them: no allocation per request.
    for (Exchange* ex : deadExchanges_) {
      if (spareExchanges_.size() < kSpareExchanges) {
        // A buffer grown by a large response is not kept.
        if (ex->out.capacity() > kSpareBuffer) std::string().swap(ex->out);
        if (ex->response.capacity() > kSpareBuffer) std::string().swap(ex->response);
        spareExchanges_.push_back(ex);
      } else {
        delete ex;
      }
    }
    deadExchanges_.clear();
    for (Upstream* u : deadUpstreams_) delete u;
    deadUpstreams_.clear();
    // On the main thread, Deliver() takes them.
    if (reported_ != nullptr && threaded_) {
      if (napi_call_threadsafe_function(closed_, reported_, napi_tsfn_nonblocking) != napi_ok) DropEvents(reported_);
      reported_ = nullptr;
    }
  }

  napi_env env_;
  /** This loop runs on a thread of its own (the worker), or on the main thread's event loop. */
  const bool threaded_;
  // The main loop: the worker, the tunnels given to it (for the commands that follow them), the
  // time after which a tunnel moves (-1: never) and those to move at the end of this round.
  Pipe* worker_ = nullptr;
  std::unordered_set<uint64_t> movedOut_;
  int64_t moveAfterMs_ = 1000;
  std::vector<Tunnel*> moving_;
  // The worker: the main loop.
  Pipe* main_ = nullptr;
  int epoll_ = -1;
  int wake_ = -1;
  // Main-thread mode.
  napi_ref callback_ = nullptr;
  napi_async_context async_ = nullptr;
  uv_poll_t* poll_ = nullptr;
  uv_timer_t* timer_ = nullptr;
  bool timerArmed_ = false;
  bool timerFast_ = false;
  bool commandsAfterCallback_ = false;
  int64_t lastIdleSweep_ = NowMs();
  int64_t lastClosingSweep_ = lastIdleSweep_;
  int64_t lastRestSweep_ = lastIdleSweep_;
  napi_threadsafe_function closed_ = nullptr;
  std::thread thread_;
  std::mutex mutex_;
  std::vector<Command> commands_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> broken_{false};
  uint64_t lastId_ = 0;
  // Main thread only: the events callback is running, and a command it queued awaits a wake-up.
  bool inCallback_ = false;
  bool wakeAfterCallback_ = false;
  // Owned by the thread this loop runs on.
  std::unordered_map<uint64_t, Tunnel*> tunnels_;
  std::vector<Tunnel*> graveyard_;
  std::vector<Event>* reported_ = nullptr;
  std::unordered_set<Tunnel*> closing_;
  // Tunnels from connect() that are connecting or waiting for the backend's first bytes.
  std::unordered_set<Tunnel*> timed_;
  std::vector<char> buffer_ = std::vector<char>(kReadSize);
  std::unordered_map<uint64_t, Listener*> listeners_;
  std::unordered_set<Incoming*> incomings_;
  std::vector<Incoming*> deadIncomings_;
  std::vector<Listener*> deadListeners_;
  // The HTTP exchanges (main loop): by id (swept for their deadlines), the parked connections by
  // descriptor, the idle backend connections by address, and how long those stay; exchanges
  // that ended, kept for reuse with their buffers.
  std::unordered_map<uint64_t, Exchange*> exchanges_;
  std::unordered_map<int, Incoming*> parked_;
  std::unordered_map<std::string, std::vector<Upstream*>> pool_;
  int64_t poolMs_ = 0;
  std::vector<Exchange*> deadExchanges_;
  std::vector<Exchange*> spareExchanges_;
  std::vector<Upstream*> deadUpstreams_;
  // A listener rests for want of descriptors.
  bool resting_ = false;
  int64_t now_ = NowMs();
};

// --- JavaScript bindings ---------------------------------------------------------------------

Pipe* PipeOf(napi_env env) {
  void* data = nullptr;
  napi_get_instance_data(env, &data);
  return static_cast<Pipe*>(data);
}

napi_value Throw(napi_env env, const char* message) {
  napi_throw_error(env, "ROOMRING_PIPE", message);
  return nullptr;
}

bool Args(napi_env env, napi_callback_info info, size_t want, napi_value* argv) {
  size_t argc = want;
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  return argc >= want;
}

int64_t Int(napi_env env, napi_value value) {
  int64_t out = 0;
  napi_get_value_int64(env, value, &out);
  return out;
}

/** A Buffer's bytes, or a string's characters as latin1 bytes; empty for anything else. */
std::string Bytes(napi_env env, napi_value value) {
  void* data = nullptr;
  size_t length = 0;
  napi_valuetype type;
  if (napi_typeof(env, value, &type) == napi_ok && type == napi_string) {
    // A string's characters are its bytes (latin1), as Buffer.from(text, 'latin1') would make them.
    if (napi_get_value_string_latin1(env, value, nullptr, 0, &length) != napi_ok) return std::string();
    std::string text(length, '\0');
    napi_get_value_string_latin1(env, value, text.data(), length + 1, &length);
    return text;
  }
  bool isBuffer = false;
  napi_is_buffer(env, value, &isBuffer);
  if (!isBuffer) return std::string();
  napi_get_buffer_info(env, value, &data, &length);
  return std::string(static_cast<const char*>(data), length);
}

/** The pipe, for a binding that gives it new work; null (with an error thrown) if it cannot take any. */
Pipe* WorkingPipe(napi_env env) {
  Pipe* pipe = PipeOf(env);
  if (pipe != nullptr && pipe->working()) return pipe;
  Throw(env, pipe == nullptr ? "the pipe is not started" : "the pipe has stopped");
  return nullptr;
}

/** WorkingPipe(), for a binding that needs `want` arguments (in argv); null (with an error thrown) without them. */
Pipe* WorkingPipeWith(napi_env env, napi_callback_info info, size_t want, napi_value* argv, const char* usage) {
  Pipe* pipe = WorkingPipe(env);
  if (pipe == nullptr) return nullptr;
  if (Args(env, info, want, argv)) return pipe;
  Throw(env, usage);
  return nullptr;
}

void Stop(void* data) { delete static_cast<Pipe*>(data); }

/** start(onEvents(events: number[])): starts the main loop and the pipe thread; once per process (or worker). */
napi_value Start(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!Args(env, info, 1, argv)) return Throw(env, "start(onEvents) needs a callback");
  if (PipeOf(env) != nullptr) return Throw(env, "the pipe is started already");
  Pipe* pipe = new Pipe(env, argv[0], false);
  auto* worker = new Pipe(env, argv[0], true);
  if (!pipe->ok() || !worker->ok()) {
    delete worker;
    delete pipe;
    return Throw(env, "epoll or eventfd could not be created");
  }
  pipe->Pair(worker);
  napi_set_instance_data(env, pipe, nullptr, nullptr);
  // Registered after the thread-safe function, so it runs before that function is torn down: the
  // pipe thread is stopped before anything it calls goes away.
  napi_add_env_cleanup_hook(env, Stop, pipe);
  return nullptr;
}

/**
 * Gives a new tunnel to the main loop (add or connect) and returns its id; if that loop has
 * stopped, an error is thrown and the tunnel's descriptors are closed, but for a client
 * descriptor JavaScript handed over itself (`keepClient`), which stays JavaScript's.
 */
napi_value Queue(napi_env env, Pipe* pipe, CommandKind kind, Tunnel* t, bool keepClient = false) {
  t->id = pipe->NextId();
  uint64_t id = t->id;
  Command command;
  command.kind = kind;
  command.tunnel = t;
  command.id = id;
  if (!pipe->Push(std::move(command))) {
    for (End& end : t->ends) {
      if (end.fd >= 0 && !(keepClient && end.side == kClient)) close(end.fd);
    }
    delete t;
    return Throw(env, "the pipe has stopped");
  }
  napi_value out;
  napi_create_double(env, static_cast<double>(id), &out);
  return out;
}

/** add(clientFd, upstreamFd, idleMs): the tunnel's id; the pipe works on its own copies of the fds. */
napi_value Add(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  Pipe* pipe = WorkingPipeWith(env, info, 3, argv, "add(clientFd, upstreamFd, idleMs)");
  if (pipe == nullptr) return nullptr;
  int fds[2] = {static_cast<int>(Int(env, argv[0])), static_cast<int>(Int(env, argv[1]))};
  auto* t = new Tunnel();
  for (int side = 0; side < 2; side++) {
    int copy = fcntl(fds[side], F_DUPFD_CLOEXEC, 0);
    if (copy < 0) {
      if (side == 1) close(t->ends[0].fd);
      delete t;
      return Throw(env, "a socket could not be duplicated");
    }
    // Non-blocking already: the copy shares the open file description, and with it the O_NONBLOCK
    // libuv set.
    t->ends[side].fd = copy;
  }
  t->idleMs = Int(env, argv[2]);
  return Queue(env, pipe, CommandKind::kAdd, t);
}

std::string Text(napi_env env, napi_value value) {
  char buffer[64];
  size_t length = 0;
  if (napi_get_value_string_utf8(env, value, buffer, sizeof buffer, &length) != napi_ok) return std::string();
  return std::string(buffer, length);
}

/** Fills `address` from an IPv4 or IPv6 literal and a port; false for anything else. */
bool ParseAddress(const std::string& ip, int port, struct sockaddr_storage* address, socklen_t* length) {
  auto* v4 = reinterpret_cast<struct sockaddr_in*>(address);
  auto* v6 = reinterpret_cast<struct sockaddr_in6*>(address);
  if (inet_pton(AF_INET, ip.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    *length = sizeof *v4;
    return true;
  }
  if (inet_pton(AF_INET6, ip.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    *length = sizeof *v6;
    return true;
  }
  return false;
}

/**
 * connect(clientFd, ip, port, handshake, connectMs, answerMs, idleMs, owned): the tunnel's id. The
 * pipe connects to ip:port (an IPv4 or IPv6 literal), sends `handshake`, and forwards from then
 * on. It works on a copy of clientFd, or, when `owned` (a descriptor the pipe accepted and handed
 * over), on clientFd itself, which is then the pipe's unless an error is thrown.
 */
napi_value Connect(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  Pipe* pipe =
      WorkingPipeWith(env, info, 8, argv, "connect(clientFd, ip, port, handshake, connectMs, answerMs, idleMs, owned)");
  if (pipe == nullptr) return nullptr;
  bool owned = false;
  napi_get_value_bool(env, argv[7], &owned);
  auto* t = new Tunnel();
  if (!ParseAddress(Text(env, argv[1]), static_cast<int>(Int(env, argv[2])), &t->address, &t->addressLength)) {
    delete t;
    return Throw(env, "connect() needs an IPv4 or IPv6 address");
  }
  int clientFd = static_cast<int>(Int(env, argv[0]));
  int copy = owned ? clientFd : fcntl(clientFd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) {
    delete t;
    return Throw(env, "a socket could not be duplicated");
  }
  t->ends[kClient].fd = copy;
  t->ends[kUpstream].pending = Bytes(env, argv[3]);
  t->answered = false;
  int64_t connectMs = Int(env, argv[4]);
  t->connectDeadline = connectMs > 0 ? NowMs() + connectMs : 0;
  t->answerMs = Int(env, argv[5]);
  t->idleMs = Int(env, argv[6]);
  return Queue(env, pipe, CommandKind::kConnect, t, owned);
}

/**
 * listen(fd, headMs, idleMs, sendMs): the listener's id. The pipe accepts the connections of the
 * listening socket fd (on a copy of it) and reports each with its first head (see kIncoming).
 */
napi_value Listen(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  Pipe* pipe = WorkingPipeWith(env, info, 4, argv, "listen(fd, headMs, idleMs, sendMs)");
  if (pipe == nullptr) return nullptr;
  int copy = fcntl(static_cast<int>(Int(env, argv[0])), F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return Throw(env, "the listening socket could not be duplicated");
  // accept4 must not block the loop: the copy shares the socket's O_NONBLOCK, set here in
  // case the socket came without it.
  fcntl(copy, F_SETFL, fcntl(copy, F_GETFL) | O_NONBLOCK);
  // Accepted sockets inherit it (as Node sets it on each of its own), one call fewer per connection.
  int one = 1;
  setsockopt(copy, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  auto* l = new Listener();
  l->id = pipe->NextId();
  l->fd = copy;
  l->headMs = Int(env, argv[1]);
  l->idleMs = Int(env, argv[2]);
  l->sendMs = Int(env, argv[3]);
  uint64_t id = l->id;
  Command command;
  command.kind = CommandKind::kListen;
  command.listener = l;
  command.id = id;
  if (!pipe->Push(std::move(command))) {
    close(copy);
    delete l;
    return Throw(env, "the pipe has stopped");
  }
  napi_value out;
  napi_create_double(env, static_cast<double>(id), &out);
  return out;
}

/**
 * bindReusePort(ip, port): a new listening socket on ip:port (an IP literal) with SO_REUSEPORT, so
 * that each cluster worker can have its own and the kernel spreads the connections over them.
 * Non-blocking, close-on-exec, TCP_NODELAY (accepted sockets inherit it). Throws with the errno's
 * text when the socket cannot be bound.
 */
napi_value BindReusePort(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!Args(env, info, 2, argv)) return Throw(env, "bindReusePort(ip, port)");
  struct sockaddr_storage address = {};
  socklen_t length = 0;
  if (!ParseAddress(Text(env, argv[0]), static_cast<int>(Int(env, argv[1])), &address, &length))
    return Throw(env, "bindReusePort() needs an IPv4 or IPv6 address");
  int fd = socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Throw(env, strerror(errno));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
      bind(fd, reinterpret_cast<struct sockaddr*>(&address), length) != 0 || listen(fd, 511) != 0) {
    int error = errno;
    close(fd);
    return Throw(env, strerror(error));
  }
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

/**
 * The shape of the bindings that act on a tunnel or listener by id: reads `argc` arguments (the
 * id first), lets `fill` complete the command from them, and queues it. A command for an id the
 * pipe no longer knows, or one pushed after the pipe stopped, has nothing left to act on.
 */
template <typename Fill>
napi_value PushById(napi_env env, napi_callback_info info, CommandKind kind, size_t argc, const char* usage,
                    Fill fill) {
  napi_value argv[4];
  Pipe* pipe = PipeOf(env);
  if (pipe == nullptr || argc > 4 || !Args(env, info, argc, argv)) return Throw(env, usage);
  Command command;
  command.kind = kind;
  command.id = static_cast<uint64_t>(Int(env, argv[0]));
  fill(command, argv);
  pipe->Push(std::move(command));
  return nullptr;
}

/**
 * unlisten(id): stops accepting; connections whose head is still awaited are closed, and the
 * listener is reported closed once events it reported before have gone out.
 */
napi_value Unlisten(napi_env env, napi_callback_info info) {
  return PushById(env, info, CommandKind::kUnlisten, 1, "unlisten(id)", [](Command&, napi_value*) {});
}

/**
 * limits(id, headMs, idleMs, sendMs): new time limits for the listener's connections: the silence
 * limit for those accepted from now on, the head limit for heads begun from now on, the send limit
 * at the next sweep.
 */
napi_value Limits(napi_env env, napi_callback_info info) {
  return PushById(env, info, CommandKind::kLimits, 4, "limits(id, headMs, idleMs, sendMs)",
                  [env](Command& command, napi_value* argv) {
                    command.headMs = Int(env, argv[1]);
                    command.idleMs = Int(env, argv[2]);
                    command.sendMs = Int(env, argv[3]);
                  });
}

/** closeWith(id, toClient, toUpstream, graceMs): last bytes to each side, then both are ended. */
napi_value CloseWith(napi_env env, napi_callback_info info) {
  return PushById(env, info, CommandKind::kCloseWith, 4, "closeWith(id, toClient, toUpstream, graceMs)",
                  [env](Command& command, napi_value* argv) {
                    command.toClient = Bytes(env, argv[1]);
                    command.toUpstream = Bytes(env, argv[2]);
                    command.graceMs = Int(env, argv[3]);
                  });
}

/**
 * halfCloseAfter(ms): how long a tunnel stays open once one side's FIN was passed on and the other
 * side has not ended (0: no limit). Both loops read it.
 */
napi_value HalfCloseAfter(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!Args(env, info, 1, argv)) return Throw(env, "halfCloseAfter(ms)");
  gHalfCloseMs.store(Int(env, argv[0]), std::memory_order_relaxed);
  return nullptr;
}

/** moveAfter(ms): how long a tunnel is forwarded on the main thread before it moves to the pipe thread (-1: never). */
napi_value MoveAfter(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  Pipe* pipe = PipeOf(env);
  if (pipe == nullptr || !Args(env, info, 1, argv)) return Throw(env, "moveAfter(ms)");
  pipe->SetMoveAfter(Int(env, argv[0]));
  return nullptr;
}

/** A Buffer's bytes, or a string's as latin1. */
std::string Latin1(napi_env env, napi_value value) {
  napi_valuetype type;
  napi_typeof(env, value, &type);
  if (type != napi_string) return Bytes(env, value);
  size_t length = 0;
  napi_get_value_string_latin1(env, value, nullptr, 0, &length);
  std::string out(length, '\0');
  napi_get_value_string_latin1(env, value, &out[0], length + 1, &length);
  return out;
}

bool Bool(napi_env env, napi_value value) {
  bool out = false;
  napi_get_value_bool(env, value, &out);
  return out;
}

/** Reads forward()'s arguments from argv[0..6] (ip, port, head, connectMs, responseMs, idleMs, poolMs); false for a bad ip. */
bool ReadRoute(napi_env env, napi_value* argv, Command* command) {
  if (!ParseAddress(Text(env, argv[0]), static_cast<int>(Int(env, argv[1])), &command->address,
                    &command->addressLength))
    return false;
  command->toUpstream = Latin1(env, argv[2]);
  command->connectMs = Int(env, argv[3]);
  command->responseMs = Int(env, argv[4]);
  command->idleMs = Int(env, argv[5]);
  command->poolMs = Int(env, argv[6]);
  return true;
}

/**
 * exchange(fd, rest, noBody, keepAlive, retriable, ip, port, head, connectMs, responseMs, idleMs,
 * poolMs): the exchange's id. JavaScript gives back an accepted connection whose request head it
 * read, with `rest` (what followed the head), and the first attempt as forward() takes it, or ''
 * for ip when forward() or reply() follows. The descriptor is the pipe's from here, unless an
 * error is thrown.
 */
napi_value StartExchange(napi_env env, napi_callback_info info) {
  napi_value argv[12];
  Pipe* pipe = WorkingPipeWith(env, info, 12, argv,
                               "exchange(fd, rest, noBody, keepAlive, retriable, ip, port, head, connectMs, "
                               "responseMs, idleMs, poolMs)");
  if (pipe == nullptr) return nullptr;
  Command command;
  command.kind = CommandKind::kExchange;
  command.fd = static_cast<int>(Int(env, argv[0]));
  command.toClient = Bytes(env, argv[1]);
  command.noBody = Bool(env, argv[2]);
  command.keepAlive = Bool(env, argv[3]);
  command.retriable = Bool(env, argv[4]);
  if (!Text(env, argv[5]).empty() && !ReadRoute(env, argv + 5, &command))
    return Throw(env, "exchange() needs an IPv4 or IPv6 address");
  command.id = pipe->NextId();
  uint64_t id = command.id;
  if (!pipe->Push(std::move(command))) return Throw(env, "the pipe has stopped");
  napi_value out;
  napi_create_double(env, static_cast<double>(id), &out);
  return out;
}

/**
 * forward(id, ip, port, head, connectMs, responseMs, idleMs, poolMs): sends the exchange's request
 * (`head`, a latin1 string) to ip:port on a pooled or new connection; idle connections stay pooled
 * for poolMs (0: none is kept).
 */
napi_value Forward(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  Pipe* pipe = PipeOf(env);
  if (pipe == nullptr || !Args(env, info, 8, argv))
    return Throw(env, "forward(id, ip, port, head, connectMs, responseMs, idleMs, poolMs)");
  Command command;
  command.kind = CommandKind::kForward;
  command.id = static_cast<uint64_t>(Int(env, argv[0]));
  if (!ReadRoute(env, argv + 1, &command)) return Throw(env, "forward() needs an IPv4 or IPv6 address");
  pipe->Push(std::move(command));
  return nullptr;
}

/** reply(id, response, keepAlive): answers the exchange's client with `response` (a latin1 string). */
napi_value Reply(napi_env env, napi_callback_info info) {
  return PushById(env, info, CommandKind::kReply, 3, "reply(id, response, keepAlive)",
                  [env](Command& command, napi_value* argv) {
                    command.toClient = Latin1(env, argv[1]);
                    command.keepAlive = Bool(env, argv[2]);
                  });
}

/**
 * release(fd): JavaScript takes an accepted connection's descriptor for itself (a Node socket, a
 * tunnel, or to close it); the pipe stops watching it at once.
 */
napi_value Release(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  Pipe* pipe = PipeOf(env);
  if (pipe == nullptr || !Args(env, info, 1, argv)) return Throw(env, "release(fd)");
  pipe->TakeParked(static_cast<int>(Int(env, argv[0])));
  return nullptr;
}

/** dropPool(): closes the idle pooled backend connections of the exchanges. */
napi_value DropPool(napi_env env, napi_callback_info info) {
  Pipe* pipe = PipeOf(env);
  if (pipe == nullptr) return Throw(env, "dropPool()");
  Command command;
  command.kind = CommandKind::kDropPool;
  pipe->Push(std::move(command));
  return nullptr;
}

/** destroy(id): closes both sockets now. */
napi_value Destroy(napi_env env, napi_callback_info info) {
  return PushById(env, info, CommandKind::kDestroy, 1, "destroy(id)", [](Command&, napi_value*) {});
}

napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      {"start", nullptr, Start, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"add", nullptr, Add, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"connect", nullptr, Connect, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"closeWith", nullptr, CloseWith, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"destroy", nullptr, Destroy, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"listen", nullptr, Listen, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"unlisten", nullptr, Unlisten, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"limits", nullptr, Limits, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"moveAfter", nullptr, MoveAfter, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"halfCloseAfter", nullptr, HalfCloseAfter, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"exchange", nullptr, StartExchange, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"forward", nullptr, Forward, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"reply", nullptr, Reply, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"release", nullptr, Release, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"dropPool", nullptr, DropPool, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"bindReusePort", nullptr, BindReusePort, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof methods / sizeof methods[0], methods);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
