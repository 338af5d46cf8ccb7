#ifndef CIPIPLINUX_H
#define CIPIPLINUX_H
// What Swift imports badly from the kernel headers (swift-on-linux.md §2, §3): the _IOW ioctl
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

/// SIOCETHTOOL with a struct ethtool_value: `cmd` (ETHTOOL_GGRO, ETHTOOL_GFLAGS, ...) on the
/// interface `name`. Get: fills `*value`. Set: writes `value`. 0, or -1 with errno.
int cipl_ethtool_get(const char *name, uint32_t cmd, uint32_t *value);
int cipl_ethtool_set(const char *name, uint32_t cmd, uint32_t value);
/// The ethtool command numbers and the LRO flag (linux/ethtool.h).
uint32_t cipl_ethtool_ggro(void);
uint32_t cipl_ethtool_sgro(void);
uint32_t cipl_ethtool_gflags(void);
uint32_t cipl_ethtool_sflags(void);
uint32_t cipl_eth_flag_lro(void);

#endif
