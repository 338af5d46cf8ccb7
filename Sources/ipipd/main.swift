import IPIPDataplane
print("ipipd")
