# The internal Application Load Balancer: the reference design's balancer in front of the
# front-ends (on AWS it takes the place of livecast-proxy). No public address: `internal`.
# A front-end is registered by its Auto Scaling group only once it is InService, i.e. after
# the launch lifecycle check completed with CONTINUE.

resource "aws_lb" "viewers" {
  name                       = "${var.name}-viewers"
  internal                   = true
  load_balancer_type         = "application"
  security_groups            = [aws_security_group.alb.id]
  subnets                    = var.private_subnet_ids
  drop_invalid_header_fields = true
  enable_deletion_protection = true
  # A blocking playlist reload (LL-HLS) holds a request up to about 6 s.
  idle_timeout = 60
}

resource "aws_lb_target_group" "web" {
  name     = "${var.name}-web"
  port     = 8081
  protocol = "HTTP"
  vpc_id   = var.vpc_id
  # Longer than a blocking reload; the front-end drains on its own once stopped.
  deregistration_delay = 15

  health_check {
    path                = "/readyz"
    port                = "9102"
    protocol            = "HTTP"
    matcher             = "200"
    interval            = 5
    timeout             = 2
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.viewers.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.web.arn
  }
}
