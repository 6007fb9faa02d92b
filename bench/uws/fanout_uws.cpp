// uWebSockets baseline for `tickwire-bench fanout --servers uws` (not part of the cargo build).
//
// The idiomatic uWebSockets broadcast: one event-loop thread, every subscriber subscribes to one
// topic on open, and each market-data payload is published to that topic once (uWebSockets
// encodes the frame and corks the sends per subscriber per loop iteration). Client messages
// (Subscribe) are read and ignored: every subscriber gets everything, as in the other servers.
//
// Payloads arrive from the bench's server role on stdin, already encoded by Tickwire's hub (so
// all servers send the same bytes): per publisher batch, `[u32 le length][payload]…` then a u32
// zero. A reader thread collects a batch and hands it to the loop with `Loop::defer` (the
// documented way in from another thread); the loop publishes it. Stdout gets `READY <port>`
// once listening on 127.0.0.1 (an ephemeral port). EOF on stdin ends the process.
//
// Settings: no compression, no idle timeout or automatic pings (the bench clients never send
// after subscribing), maxBackpressure 1 MiB per subscriber without closing (over it uWebSockets
// skips the subscriber, which the clients count as a gap).
//
// Build: bench/uws/build.sh (see docs/benchmarks.md, fanout).

#include "App.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

struct Sub {};

bool read_exact(char *p, size_t n) {
    while (n > 0) {
        ssize_t r = read(0, p, n);
        if (r <= 0) {
            return false;
        }
        p += r;
        n -= static_cast<size_t>(r);
    }
    return true;
}

}  // namespace

int main() {
    uWS::App app;
    uWS::Loop *loop = uWS::Loop::get();
    app.ws<Sub>("/*", {
        .compression = uWS::DISABLED,
        .maxPayloadLength = 16 * 1024,
        .idleTimeout = 0,
        .maxBackpressure = 1024 * 1024,
        .closeOnBackpressureLimit = false,
        .resetIdleTimeoutOnSend = false,
        .sendPingsAutomatically = false,
        .open = [](auto *ws) { ws->subscribe("md"); },
        .message = [](auto *, std::string_view, uWS::OpCode) {},
    }).listen("127.0.0.1", 0, [](us_listen_socket_t *ls) {
        if (!ls) {
            std::fprintf(stderr, "fanout_uws: listen failed\n");
            std::exit(1);
        }
        std::printf("READY %d\n", us_socket_local_port(0, reinterpret_cast<us_socket_t *>(ls)));
        std::fflush(stdout);
    });
    uWS::App *appp = &app;
    std::thread reader([loop, appp] {
        for (;;) {
            auto batch = std::make_shared<std::vector<std::string>>();
            for (;;) {
                uint32_t len = 0;
                if (!read_exact(reinterpret_cast<char *>(&len), 4)) {
                    _exit(0);
                }
                if (len == 0) {
                    break;
                }
                if (len > (1u << 24)) {
                    std::fprintf(stderr, "fanout_uws: bad payload length %u\n", len);
                    _exit(2);
                }
                std::string p(len, '\0');
                if (!read_exact(p.data(), len)) {
                    _exit(0);
                }
                batch->push_back(std::move(p));
            }
            loop->defer([appp, batch] {
                for (auto &p : *batch) {
                    appp->publish("md", p, uWS::OpCode::BINARY, false);
                }
            });
        }
    });
    app.run();
    reader.join();
    return 0;
}
