#ifndef CIPIPLINUX_H
#define CIPIPLINUX_H
// What Swift imports badly from the kernel headers: the _IOW ioctl
// request numbers, mmsghdr (needs _GNU_SOURCE, which must stay out of Swift-imported headers).
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/eventfd.h>
#include <time.h>
#include <net/if.h>
#include <netinet/in.h>
#include <linux/if_tun.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/filter.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <linux/if_addr.h>
#include <linux/fib_rules.h>

unsigned long cipl_tunsetiff(void);

/// struct mmsghdr, declared without _GNU_SOURCE (checked against the real one in the .c file).
typedef struct {
    struct msghdr msg_hdr;
    unsigned int msg_len;
} cipl_mmsghdr;

int cipl_recvmmsg(int fd, cipl_mmsghdr *vec, unsigned int vlen, int flags, struct timespec *timeout);
int cipl_sendmmsg(int fd, cipl_mmsghdr *vec, unsigned int vlen, int flags);

/// pipe2(fds, O_CLOEXEC) (pipe2 needs _GNU_SOURCE).
int cipl_pipe_cloexec(int fds[2]);

/// setns(fd, CLONE_NEWNET): moves the calling thread into the network namespace `fd` refers to
/// (setns needs _GNU_SOURCE). Used by tests and tools that create devices inside a namespace.
int cipl_setns_net(int fd);


// --- TUN offloads (linux/if_tun.h; USO needs Linux 6.2, newer than some distributions' headers) ---
/// TUNSETOFFLOAD with `flags` (TUN_F_*): which segmentation offloads the reader takes.
int cipl_tun_set_offload(int fd, unsigned int flags);
/// TUNSETVNETHDRSZ: the size of the virtio header in front of every packet.
int cipl_tun_set_vnet_header_size(int fd, int size);
enum {
    CIPL_TUN_F_CSUM = 0x01, CIPL_TUN_F_TSO4 = 0x02, CIPL_TUN_F_TSO6 = 0x04, CIPL_TUN_F_TSO_ECN = 0x08,
    CIPL_TUN_F_USO4 = 0x20, CIPL_TUN_F_USO6 = 0x40,
};
unsigned int cipl_iff_vnet_hdr(void);
unsigned int cipl_iff_multi_queue(void);

/// SIOCGIFHWADDR: the interface's hardware address (6 bytes written to `mac`) and ARPHRD type.
int cipl_interface_hardware_address(const char *name, uint8_t mac[6], unsigned short *type);

// --- Ring indices shared with the kernel (AF_XDP): acquire/release, as the kernel pairs them ---
static inline uint32_t cipl_load_acquire_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void cipl_store_release_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

// --- TPACKET_V2 receive ring (linux/if_packet.h) ---
/// PACKET_VERSION = TPACKET_V2, PACKET_RX_RING with `frame_count` frames of `frame_size` bytes in
/// blocks of `block_size`, then mmap; returns the ring or NULL (errno set, `*failed_call` named).
void *cipl_packet_rx_ring(int fd, uint32_t block_size, uint32_t frame_size, uint32_t frame_count,
                          const char **failed_call);
void cipl_packet_rx_ring_unmap(void *ring, uint64_t length);

// --- AF_XDP (linux/if_xdp.h), transmit only ---
/// One AF_XDP socket with its UMEM and its rings mapped (fill and completion rings, TX ring).
typedef struct {
    int fd;
    uint8_t *umem;
    uint64_t umem_length;
    uint32_t frame_size;
    uint32_t frame_count;
    uint32_t ring_size;
    // TX ring: descriptors {u64 addr; u32 len; u32 options}.
    uint32_t *tx_producer, *tx_consumer, *tx_flags;
    void *tx_descriptors;
    // Completion ring: u64 addresses of frames the kernel is done with.
    uint32_t *cq_producer, *cq_consumer;
    uint64_t *cq_addresses;
    // Fill ring (required by bind; unused without an RX ring).
    uint32_t *fq_producer, *fq_consumer;
    uint64_t *fq_addresses;
    void *maps[3];
    uint64_t map_lengths[3];
    /// Whether XDP_MAX_TX_SKB_BUDGET was accepted (Linux 6.17+).
    int tx_budget_accepted;
} cipl_xsk;

/// Creates the socket, registers a UMEM of `frame_count` frames of `frame_size` bytes, sets up and
/// maps the rings (`ring_size` entries each, a power of two), raises the per-sendto transmit
/// budget to `tx_budget` where the kernel allows it, and binds to `ifindex`/`queue` with
/// `bind_flags` (XDP_COPY, XDP_USE_NEED_WAKEUP). 0 on success; -1 with errno and `*failed_call`
/// naming the step that failed (everything is undone).
int cipl_xsk_open(cipl_xsk *x, int ifindex, uint32_t queue, uint32_t frame_count, uint32_t frame_size,
                  uint32_t ring_size, uint32_t tx_budget, uint16_t bind_flags, const char **failed_call);
void cipl_xsk_close(cipl_xsk *x);
/// sendto(fd, NULL, 0, MSG_DONTWAIT): makes the kernel transmit what the TX ring holds (copy mode).
int cipl_xsk_kick(int fd);
enum { CIPL_XDP_COPY = 1 << 1, CIPL_XDP_USE_NEED_WAKEUP = 1 << 3, CIPL_XDP_RING_NEED_WAKEUP = 1 };

#endif
