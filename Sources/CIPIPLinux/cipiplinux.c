#define _GNU_SOURCE 1
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/if_tun.h>
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>
#include <linux/sockios.h>
#include <linux/if_xdp.h>
#include <net/if_arp.h>
#include <sys/mman.h>
#include "cipiplinux.h"

#ifndef SOL_XDP
#define SOL_XDP 283
#endif
#ifndef AF_XDP
#define AF_XDP 44
#endif
#ifndef XDP_MAX_TX_SKB_BUDGET
#define XDP_MAX_TX_SKB_BUDGET 9
#endif

_Static_assert(sizeof(cipl_mmsghdr) == sizeof(struct mmsghdr), "mmsghdr size");
_Static_assert(offsetof(cipl_mmsghdr, msg_len) == offsetof(struct mmsghdr, msg_len), "mmsghdr layout");

unsigned long cipl_tunsetiff(void) { return TUNSETIFF; }

int cipl_recvmmsg(int fd, cipl_mmsghdr *vec, unsigned int vlen, int flags, struct timespec *timeout) {
    return recvmmsg(fd, (struct mmsghdr *)vec, vlen, flags, timeout);
}

int cipl_sendmmsg(int fd, cipl_mmsghdr *vec, unsigned int vlen, int flags) {
    return sendmmsg(fd, (struct mmsghdr *)vec, vlen, flags);
}

int cipl_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int cipl_setns_net(int fd) { return setns(fd, CLONE_NEWNET); }


int cipl_tun_set_offload(int fd, unsigned int flags) { return ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags); }
int cipl_tun_set_vnet_header_size(int fd, int size) { return ioctl(fd, TUNSETVNETHDRSZ, &size); }
unsigned int cipl_iff_vnet_hdr(void) { return IFF_VNET_HDR; }
unsigned int cipl_iff_multi_queue(void) { return IFF_MULTI_QUEUE; }

int cipl_interface_hardware_address(const char *name, uint8_t mac[6], unsigned short *type) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    int r = ioctl(fd, SIOCGIFHWADDR, &ifr);
    int saved = errno;
    close(fd);
    errno = saved;
    if (r < 0) return -1;
    memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    *type = ifr.ifr_hwaddr.sa_family;
    return 0;
}

/* Maps one ring of `entries` entries of `entry_size` bytes at page offset `offset`. */
static void *cipl_xsk_map(cipl_xsk *x, int slot, const struct xdp_ring_offset *o, uint32_t entries,
                          size_t entry_size, off_t offset) {
    size_t length = o->desc + (size_t)entries * entry_size;
    void *m = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, x->fd, offset);
    if (m == MAP_FAILED) return NULL;
    x->maps[slot] = m;
    x->map_lengths[slot] = length;
    return m;
}

void cipl_xsk_close(cipl_xsk *x) {
    for (int i = 0; i < 3; i++) {
        if (x->maps[i]) munmap(x->maps[i], x->map_lengths[i]);
        x->maps[i] = NULL;
    }
    if (x->fd >= 0) close(x->fd);
    x->fd = -1;
    if (x->umem) munmap(x->umem, x->umem_length);
    x->umem = NULL;
}

int cipl_xsk_open(cipl_xsk *x, int ifindex, uint32_t queue, uint32_t frame_count, uint32_t frame_size,
                  uint32_t ring_size, uint32_t tx_budget, uint16_t bind_flags, const char **failed_call) {
    memset(x, 0, sizeof *x);
    x->fd = -1;
    x->frame_size = frame_size;
    x->frame_count = frame_count;
    x->ring_size = ring_size;
#define FAIL(call) do { int e = errno; *failed_call = call; cipl_xsk_close(x); errno = e; return -1; } while (0)
    x->fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (x->fd < 0) FAIL("socket(AF_XDP)");
    x->umem_length = (uint64_t)frame_count * frame_size;
    void *u = mmap(NULL, x->umem_length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (u == MAP_FAILED) { x->umem = NULL; FAIL("mmap(UMEM)"); }
    x->umem = u;
    struct xdp_umem_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.addr = (uint64_t)(uintptr_t)u;
    reg.len = x->umem_length;
    reg.chunk_size = frame_size;
    if (setsockopt(x->fd, SOL_XDP, XDP_UMEM_REG, &reg, sizeof reg) < 0) FAIL("setsockopt(XDP_UMEM_REG)");
    if (setsockopt(x->fd, SOL_XDP, XDP_UMEM_FILL_RING, &ring_size, sizeof ring_size) < 0) FAIL("setsockopt(XDP_UMEM_FILL_RING)");
    if (setsockopt(x->fd, SOL_XDP, XDP_UMEM_COMPLETION_RING, &ring_size, sizeof ring_size) < 0)
        FAIL("setsockopt(XDP_UMEM_COMPLETION_RING)");
    if (setsockopt(x->fd, SOL_XDP, XDP_TX_RING, &ring_size, sizeof ring_size) < 0) FAIL("setsockopt(XDP_TX_RING)");
    struct xdp_mmap_offsets off;
    socklen_t optlen = sizeof off;
    if (getsockopt(x->fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &optlen) < 0) FAIL("getsockopt(XDP_MMAP_OFFSETS)");
    uint8_t *f = cipl_xsk_map(x, 0, &off.fr, ring_size, sizeof(uint64_t), XDP_UMEM_PGOFF_FILL_RING);
    if (!f) FAIL("mmap(fill ring)");
    x->fq_producer = (uint32_t *)(f + off.fr.producer);
    x->fq_consumer = (uint32_t *)(f + off.fr.consumer);
    x->fq_addresses = (uint64_t *)(f + off.fr.desc);
    uint8_t *c = cipl_xsk_map(x, 1, &off.cr, ring_size, sizeof(uint64_t), XDP_UMEM_PGOFF_COMPLETION_RING);
    if (!c) FAIL("mmap(completion ring)");
    x->cq_producer = (uint32_t *)(c + off.cr.producer);
    x->cq_consumer = (uint32_t *)(c + off.cr.consumer);
    x->cq_addresses = (uint64_t *)(c + off.cr.desc);
    uint8_t *t = cipl_xsk_map(x, 2, &off.tx, ring_size, sizeof(struct xdp_desc), XDP_PGOFF_TX_RING);
    if (!t) FAIL("mmap(TX ring)");
    x->tx_producer = (uint32_t *)(t + off.tx.producer);
    x->tx_consumer = (uint32_t *)(t + off.tx.consumer);
    x->tx_flags = (uint32_t *)(t + off.tx.flags);
    x->tx_descriptors = t + off.tx.desc;
    // Linux 6.17 lets one sendto() transmit more than 32 descriptors; older kernels refuse the
    // option, which only costs more sendto() calls.
    x->tx_budget_accepted = setsockopt(x->fd, SOL_XDP, XDP_MAX_TX_SKB_BUDGET, &tx_budget, sizeof tx_budget) == 0;
    struct sockaddr_xdp sa;
    memset(&sa, 0, sizeof sa);
    sa.sxdp_family = AF_XDP;
    sa.sxdp_ifindex = (uint32_t)ifindex;
    sa.sxdp_queue_id = queue;
    sa.sxdp_flags = bind_flags;
    if (bind(x->fd, (struct sockaddr *)&sa, sizeof sa) < 0) FAIL("bind(AF_XDP)");
#undef FAIL
    return 0;
}

int cipl_xsk_kick(int fd) { return (int)sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0); }

void *cipl_packet_rx_ring(int fd, uint32_t block_size, uint32_t frame_size, uint32_t frame_count,
                          const char **failed_call) {
    int version = TPACKET_V2;
    if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &version, sizeof version) < 0) {
        *failed_call = "setsockopt(PACKET_VERSION)";
        return NULL;
    }
    struct tpacket_req req;
    memset(&req, 0, sizeof req);
    req.tp_block_size = block_size;
    req.tp_block_nr = (uint32_t)(((uint64_t)frame_count * frame_size) / block_size);
    req.tp_frame_size = frame_size;
    req.tp_frame_nr = frame_count;
    if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) < 0) {
        *failed_call = "setsockopt(PACKET_RX_RING)";
        return NULL;
    }
    void *ring = mmap(NULL, (size_t)frame_count * frame_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (ring == MAP_FAILED) {
        *failed_call = "mmap(PACKET_RX_RING)";
        return NULL;
    }
    return ring;
}

void cipl_packet_rx_ring_unmap(void *ring, uint64_t length) { munmap(ring, length); }
